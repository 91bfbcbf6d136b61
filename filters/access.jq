# access.jq: access events only.
#
#   gk-filter -f access.jq                    the access events, unchanged
#   gk-filter -f access.jq --arg format clf   {"line": "<common log format>"}
#
# The clf line: host ident authuser [date] "request" status bytes, as
#   10.0.0.7 - - [04/Dec/2026:09:30:00 +0000] "GET /orders?id=1 HTTP/1.1" 200 512
# host is remote without its port, authuser the event's user member (or -),
# the date comes from ts (UTC), the request from method, path, query and
# proto (HTTP/1.1 when absent); bytes 0 or absent is written "-".
def gk_host:
  if type != "string" then "-"
  elif startswith("[") then (split("]")[0] | ltrimstr("["))
  elif (split(":") | length) == 2 then split(":")[0]
  else . end;

def gk_clf_date:
  if type == "string" and length >= 19 then
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
     "Nov", "Dec"] as $mon
    | "\(.[8:10])/\($mon[(.[5:7] | tonumber) - 1])/\(.[0:4]):\(.[11:19]) +0000"
  else "-" end;

select(.type == "access")
| if (($ARGS.named.format // "json") | tostring) == "clf" then
    {"line": "\(.remote | gk_host) - \(.user // "-") [\(.ts | (gk_clf_date? // "-"))] \"\(.method // "-") \(.path // "-")\(if ((.query // "") | tostring) != "" then "?\(.query)" else "" end) \(.proto // "HTTP/1.1")\" \(.status // "-") \(if (.bytes // 0) == 0 then "-" else .bytes end)"}
  else . end
