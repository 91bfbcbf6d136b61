# redact.jq: mask secrets anywhere in an event.
#
#   gk-filter -f redact.jq --arg keys password,token
#
# The value of every member named in keys (comma-separated, compared
# without regard to case; default password,token,secret,authorization)
# becomes "[REDACTED]", at any depth.  In every other string, masked in
# place: a bearer token ("Bearer xyz" becomes "Bearer [REDACTED]"), a
# payment card number (13 to 19 digits, spaces or dashes allowed between
# them, passing the Luhn check) and an e-mail address.
def gk_luhn:
  [explode[] | select(. >= 48 and . <= 57) | . - 48] as $d
  | ($d | length) as $n
  | $n >= 13 and $n <= 19
    and ([range(0; $n) as $i
          | $d[$n - 1 - $i]
          | if $i % 2 == 1 then (. * 2 | if . > 9 then . - 9 else . end)
            else . end]
         | add) % 10 == 0;

def gk_mask:
  gsub("(?<b>\\b[Bb][Ee][Aa][Rr][Ee][Rr])\\s+[A-Za-z0-9._~+/=-]+"; "\(.b) [REDACTED]")
  | gsub("[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}"; "[REDACTED]")
  | gsub("(?<c>\\b\\d(?:[ -]?\\d){12,18}\\b)";
         if (.c | gk_luhn) then "[REDACTED]" else .c end);

def gk_redact($keys):
  if type == "object" then
    with_entries(
      (.key | ascii_downcase) as $k
      | if any($keys[]; . == $k) then .value = "[REDACTED]"
        else .value |= gk_redact($keys) end)
  elif type == "array" then map(gk_redact($keys))
  elif type == "string" then gk_mask
  else . end;

(($ARGS.named.keys // "password,token,secret,authorization")
 | tostring | ascii_downcase | split(",") | map(select(length > 0))) as $keys
| gk_redact($keys)
