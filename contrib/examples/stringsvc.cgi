#!/bin/sh
# stringsvc.cgi: Go kit's stringsvc as a CGI/1.1 script, the same service
# as stringsvc.c, for gk-exec (or any CGI server).  Needs jq.
#
#	gk-listener -l 127.0.0.1:8080 -- gk-exec contrib/examples/stringsvc.cgi
#
#	POST /uppercase {"s":"hello"}  ->  200 {"v":"HELLO"}
#	POST /count     {"s":"hello"}  ->  200 {"v":5}
#	empty string to /uppercase     ->  400 {"err":"empty string"}
#	not a JSON object              ->  400 {"err":"malformed JSON body"}
#	another path 404, another method 405

reply() { # STATUS JSON [EXTRA-HEADER]
	printf 'Status: %s\r\nContent-Type: application/json\r\n' "$1"
	if [ -n "$3" ]; then printf '%s\r\n' "$3"; fi
	printf '\r\n%s\n' "$2"
}

case $PATH_INFO in
/uppercase) op=uppercase ;;
/count) op=count ;;
*)
	reply 404 '{"err":"not found"}'
	exit 0
	;;
esac
if [ "$REQUEST_METHOD" != POST ]; then
	reply 405 '{"err":"method not allowed"}' 'Allow: POST'
	exit 0
fi

res=$(head -c "${CONTENT_LENGTH:-0}" | jq -R -s -r --arg op "$op" '
	def out(st; v): "\(st) \(v | tojson)";
	(try (fromjson | [.]) catch null) as $w
	| if $w == null or ($w[0] | type) != "object" then
		out(400; {err: "malformed JSON body"})
	else
		$w[0].s as $s
		| if $s != null and ($s | type) != "string" then
			out(400; {err: "s must be a string"})
		else
			($s // "") as $s
			| if $op == "uppercase" then
				if $s == "" then out(400; {err: "empty string"})
				else out(200; {v: ($s | ascii_upcase)}) end
			else
				out(200; {v: ($s | utf8bytelength)})
			end
		end
	end') || exit 1
reply "${res%% *}" "${res#* }"
