# schema.jq: check the required members of each event type of gk-events(5)
# and their types; a violator passes, tagged "schema_error": "<what>".
#
#   gk-filter -f schema.jq
#
#   log      ts, level (debug|info|warn|error|fatal), proc, pid, msg
#   span     trace_id, span_id, name, kind, start_us, duration_us, status
#   access   method, path, status, bytes, duration, remote
#   metrics  ts, proc, pid, metrics (an array)
# An event without a type is a log event (gk-events(5)); a type that is not
# a string, or none of these four, is an error.
# Members are checked in that order, problems joined with "; ".
def gk_schema:
  {
    "log": [["ts", "string"], ["level", "string"],
            ["proc", "string"], ["pid", "number"], ["msg", "string"]],
    "span": [["trace_id", "string"], ["span_id", "string"], ["name", "string"],
             ["kind", "string"], ["start_us", "number"],
             ["duration_us", "number"], ["status", "string"]],
    "access": [["method", "string"], ["path", "string"], ["status", "number"],
               ["bytes", "number"], ["duration", "number"],
               ["remote", "string"]],
    "metrics": [["ts", "string"], ["proc", "string"],
                ["pid", "number"], ["metrics", "array"]]
  };

. as $e
| (if has("type") then .type else "log" end) as $t
| (if ($t | type) != "string" then ["type: expected string, got \($t | type)"]
   elif gk_schema[$t] == null then ["unknown type \($t)"]
   else
     [gk_schema[$t][] as [$k, $want]
      | if ($e | has($k)) | not then "missing \($k)"
        elif ($e[$k] | type) != $want
        then "\($k): expected \($want), got \($e[$k] | type)"
        else empty end]
     + (if $t == "log" and ($e.level | type) == "string"
           and ([$e.level] | inside(["debug", "info", "warn", "error", "fatal"]) | not)
        then ["level: unknown level \($e.level)"] else [] end)
   end) as $problems
| if ($problems | length) > 0 then . + {"schema_error": ($problems | join("; "))}
  else . end
