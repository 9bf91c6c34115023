// Go's net/http "hello" server for benchmarks/http_compare.sh (run with GOMAXPROCS=1).
//   go build -o http_hello_go http_hello.go && GOMAXPROCS=1 ./http_hello_go PORT
package main

import (
	"net/http"
	"os"
)

func main() {
	body := []byte("hello")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
