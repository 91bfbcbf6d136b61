#!/bin/sh
# hello.cgi: the smallest CGI script, for gk-exec's tests and benchmark.
printf 'Content-Type: text/plain\n\nhello\n'
