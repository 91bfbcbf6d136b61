# sample.jq: keep 1 event in N, deterministically; never drops error or
# fatal events, and never fails.
#
#   gk-filter -f sample.jq --argjson n 10
#
# The choice hashes trace_id when the event has one (so a trace is kept or
# dropped whole), else ts and msg: the same input always gives the same
# output.  n (default 10; 1 or less keeps everything) may be a number or a
# numeric string.
def gk_hash:
  reduce explode[] as $c (5381; (. * 33 + $c) % 2147483647);

(($ARGS.named.n // 10)
 | if type == "number" then . elif type == "string" then (tonumber? // 10)
   else 10 end
 | floor) as $n
| if $n <= 1 then .
  elif (.level? | type) == "string"
       and ((.level | ascii_downcase) == "error" or (.level | ascii_downcase) == "fatal")
  then .
  else
    (if (.trace_id? | type) == "string" then .trace_id
     else ((.ts? // "" | tostring) + "\u0000" + (.msg? // "" | tostring)) end) as $key
    | select(($key | gk_hash) % $n == 0)
  end
