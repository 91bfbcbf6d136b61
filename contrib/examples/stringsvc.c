/*
 * stringsvc: Go kit's canonical example service, with gk_serve(3).
 *
 *	POST /uppercase {"s":"hello"}  ->  200 {"v":"HELLO"}
 *	POST /count     {"s":"hello"}  ->  200 {"v":5}
 *
 * An empty string to /uppercase is Go kit's ErrEmpty: 400 {"err":"empty
 * string"}.  A body that is not a JSON object is 400, another path 404,
 * another method 405.  Uppercasing is ASCII and count is in bytes, as
 * stringsvc.cgi (the same service as a CGI script) does them.
 *
 *	gk-listener -l 127.0.0.1:8080 -- stringsvc
 */
#include <gokit.h>
#include <string.h>

static void
reply(gk_response *w, int status, const char *json)
{
	gk_response_status(w, status);
	gk_response_header(w, "content-type", "application/json");
	gk_response_body(w, json, strlen(json));
	gk_response_body(w, "\n", 1);
}

/* The "s" member of the request body into s; an error message, or NULL. */
static const char *
decode(const gk_request *req, gk_buf *s)
{
	size_t n;
	const char *body = gk_request_body(req, &n);
	gk_wire_error err;
	/* Any JSON object, read as Go's decoder and jq read one: any
	 * number of members (gk_wire_parse takes a wire line's 64, no key
	 * twice), and of an s given twice the last. */
	if (gk_json_validate(body, n, &err) < 0)
		return "malformed JSON body";
	while (n && (*body == ' ' || *body == '\t' || *body == '\r' ||
	    *body == '\n'))
		body++, n--;
	if (!n || *body != '{')
		return "malformed JSON body";
	gk_json obj = {GK_JSON_OBJECT, body, n}, k, m, v = {0};
	gk_json_iter it;
	gk_json_iter_init(&it, obj);
	while (gk_json_iter_next(&it, &k, &m))
		if (gk_json_eq(k, "s"))
			v = m;
	if (v.type == GK_JSON_NONE || v.type == GK_JSON_NULL)
		return NULL; /* as Go's decoder: the zero value */
	if (v.type != GK_JSON_STRING || gk_json_string(v, s) < 0)
		return "s must be a string";
	return NULL;
}

static void
stringsvc(const gk_request *req, gk_response *w, void *arg)
{
	(void)arg;
	const char *path = gk_request_path(req);
	bool upper = !strcmp(path, "/uppercase");
	if (!upper && strcmp(path, "/count")) {
		reply(w, 404, "{\"err\":\"not found\"}");
		return;
	}
	if (strcmp(gk_request_method(req), "POST")) {
		gk_response_header(w, "allow", "POST");
		reply(w, 405, "{\"err\":\"method not allowed\"}");
		return;
	}
	gk_buf s = {0}, out = {0};
	const char *e = decode(req, &s);
	if (e) {
		gk_buf_adds(&out, "{\"err\":");
		gk_json_quote(&out, e, strlen(e));
		gk_buf_addc(&out, '}');
		reply(w, 400, gk_buf_cstr(&out));
	} else if (upper && !s.len) {
		reply(w, 400, "{\"err\":\"empty string\"}");
	} else if (upper) {
		for (size_t i = 0; i < s.len; i++)
			if (s.data[i] >= 'a' && s.data[i] <= 'z')
				s.data[i] = (char)(s.data[i] - 32);
		gk_buf_adds(&out, "{\"v\":");
		gk_json_quote(&out, s.data ? s.data : "", s.len);
		gk_buf_addc(&out, '}');
		reply(w, 200, gk_buf_cstr(&out));
	} else {
		gk_buf_adds(&out, "{\"v\":");
		gk_buf_adduint(&out, s.len);
		gk_buf_addc(&out, '}');
		reply(w, 200, gk_buf_cstr(&out));
	}
	gk_buf_free(&s);
	gk_buf_free(&out);
}

int
main(int argc, char **argv)
{
	return gk_serve(argc, argv, stringsvc, NULL);
}
