/*
 * hello: the smallest gokit service.  On stdin/stdout behind gk-listener,
 * on its own with -l 127.0.0.1:8080 --http.
 */
#include <gokit.h>

static void
hello(const gk_request *req, gk_response *resp, void *arg)
{
	(void)req;
	(void)arg;
	gk_response_header(resp, "content-type", "text/plain");
	gk_response_body(resp, "hello\n", 6);
}

int
main(int argc, char **argv)
{
	return gk_serve(argc, argv, hello, NULL);
}
