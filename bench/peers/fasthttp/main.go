// The sample clinical app on plain fasthttp (the engine under Fiber), with a
// small router by method and path. GOMAXPROCS is left at its default.
//
//	fasthttp-peer -listen 127.0.0.1:8082 -protocols data/protocols.json
//
// PORT / PROTOCOLS in the environment are used when the flags are absent.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

type Protocol struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Sponsor   string `json:"sponsor"`
	Phase     string `json:"phase"`
	Status    string `json:"status"`
	CreatedAt string `json:"createdAt"`
}

type M map[string]interface{}

var (
	protocols map[string]*Protocol

	reportsMu sync.Mutex
	reports   = map[string][]byte{} // latest reportData per patientId
	reportN   uint64

	tagsMu sync.Mutex
	tags   = map[string]map[string]struct{}{}
	tagN   uint64
)

const protocolPrefix = "/api/v1/protocols/"

func loadProtocols(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		log.Fatalf("read %s: %v", path, err)
	}
	var list []*Protocol
	if err := json.Unmarshal(raw, &list); err != nil {
		log.Fatalf("parse %s: %v", path, err)
	}
	protocols = make(map[string]*Protocol, len(list))
	for _, p := range list {
		protocols[p.ID] = p
	}
}

func reply(ctx *fasthttp.RequestCtx, status int, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		ctx.Error(`{"error":"internal"}`, fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// decodeObject parses body as a JSON object. err is set when the body is not
// JSON at all; obj is nil when it is JSON but not an object.
func decodeObject(body []byte) (obj map[string]json.RawMessage, err error) {
	err = json.Unmarshal(body, &obj)
	if err != nil {
		if _, ok := err.(*json.UnmarshalTypeError); ok {
			return nil, nil
		}
		return nil, err
	}
	return obj, nil
}

func nonEmptyString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

func nonEmptyObject(raw json.RawMessage) bool {
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && len(m) > 0
}

func getProtocol(ctx *fasthttp.RequestCtx, id string) {
	p := protocols[id]
	if p == nil {
		reply(ctx, fasthttp.StatusNotFound, M{"error": "protocol not found", "id": id})
		return
	}
	reply(ctx, fasthttp.StatusOK, p)
}

func submit(ctx *fasthttp.RequestCtx) {
	obj, err := decodeObject(ctx.PostBody())
	if err != nil {
		reply(ctx, fasthttp.StatusBadRequest, M{"success": false, "error": "invalid JSON: " + err.Error()})
		return
	}
	var fields []string
	pid, ok := nonEmptyString(obj["patientId"])
	if !ok {
		fields = append(fields, "patientId")
	}
	if !nonEmptyObject(obj["reportData"]) {
		fields = append(fields, "reportData")
	}
	if fields != nil {
		reply(ctx, fasthttp.StatusBadRequest, M{"success": false, "error": "invalid request", "fields": fields})
		return
	}
	data := append([]byte(nil), obj["reportData"]...)
	reportsMu.Lock()
	reports[pid] = data
	reportN++
	reportsMu.Unlock()
	reply(ctx, fasthttp.StatusOK, M{"success": true, "message": "report accepted"})
}

func addTag(ctx *fasthttp.RequestCtx) {
	obj, err := decodeObject(ctx.PostBody())
	if err != nil {
		reply(ctx, fasthttp.StatusBadRequest, M{"success": false, "error": "invalid JSON: " + err.Error()})
		return
	}
	var fields []string
	pid, ok := nonEmptyString(obj["patientId"])
	if !ok {
		fields = append(fields, "patientId")
	}
	tag, ok := nonEmptyString(obj["tagName"])
	if !ok {
		fields = append(fields, "tagName")
	}
	if fields != nil {
		reply(ctx, fasthttp.StatusBadRequest, M{"success": false, "error": "invalid request", "fields": fields})
		return
	}
	tagsMu.Lock()
	set := tags[pid]
	if set == nil {
		set = map[string]struct{}{}
		tags[pid] = set
	}
	set[tag] = struct{}{}
	tagN++
	tagsMu.Unlock()
	reply(ctx, fasthttp.StatusOK, M{"success": true})
}

func sleep(ctx *fasthttp.RequestCtx) {
	time.Sleep(50 * time.Millisecond)
	reply(ctx, fasthttp.StatusOK, M{"ok": true})
}

func notFound(ctx *fasthttp.RequestCtx) {
	reply(ctx, fasthttp.StatusNotFound, M{"error": "not found"})
}

func router(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if ctx.IsGet() {
		switch {
		case bytes.HasPrefix(path, []byte(protocolPrefix)):
			id := string(path[len(protocolPrefix):])
			if id == "" || strings.IndexByte(id, '/') >= 0 {
				notFound(ctx)
				return
			}
			getProtocol(ctx, id)
		case string(path) == "/api/v1/sleep":
			sleep(ctx)
		default:
			notFound(ctx)
		}
		return
	}
	if ctx.IsPost() {
		switch string(path) {
		case "/api/epro/submit":
			submit(ctx)
		case "/api/v1/tags/add":
			addTag(ctx)
		default:
			notFound(ctx)
		}
		return
	}
	notFound(ctx)
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT (default 127.0.0.1:$PORT)")
	path := flag.String("protocols", os.Getenv("PROTOCOLS"), "protocols.json fixture")
	flag.Parse()
	if *listen == "" {
		*listen = "127.0.0.1:" + os.Getenv("PORT")
	}
	loadProtocols(*path)

	s := &fasthttp.Server{
		Handler: router,
		Name:    "fasthttp",
	}
	if err := s.ListenAndServe(*listen); err != nil {
		log.Fatal(err)
	}
}
