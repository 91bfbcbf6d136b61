# level.jq: keep log events at or above a minimum level.
#
#   gk-filter -f level.jq --arg min warn
#
# min: debug, info (the default), warn, error or fatal.  Events without a
# string level (metrics, span and access events) pass, and so do levels
# this filter does not know.
def gk_level_rank:
  {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3, "fatal": 4}
  [ascii_downcase];

(($ARGS.named.min // "info") | tostring) as $min
| ($min | gk_level_rank) as $m
| if $m == null then
    error("level.jq: --arg min \($min): expected debug, info, warn, error or fatal")
  elif (.level | type) != "string" then .
  else select(((.level | gk_level_rank) // $m) >= $m)
  end
