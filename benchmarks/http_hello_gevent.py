# gevent's pywsgi "hello" server for benchmarks/http_compare.sh. Debian's python3-gevent: run it
# with /usr/bin/python3 (a pyenv python3 on PATH has no gevent).
#   /usr/bin/python3 http_hello_gevent.py PORT
import sys
from gevent.pywsgi import WSGIServer


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, backlog=4096).serve_forever()
