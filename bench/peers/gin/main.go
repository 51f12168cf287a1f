// The sample clinical app on Gin (release mode, gin.New() with Recovery only).
//
//	gin-peer -listen 127.0.0.1:8081 -protocols data/protocols.json
//
// PORT / PROTOCOLS in the environment are used when the flags are absent.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

type Protocol struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Sponsor   string `json:"sponsor"`
	Phase     string `json:"phase"`
	Status    string `json:"status"`
	CreatedAt string `json:"createdAt"`
}

var (
	protocols map[string]*Protocol

	reportsMu sync.Mutex
	reports   = map[string][]byte{} // latest reportData per patientId
	reportN   uint64

	tagsMu sync.Mutex
	tags   = map[string]map[string]struct{}{}
	tagN   uint64
)

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

// decodeObject parses body as a JSON object. bad is true when the body is not
// JSON at all; obj is nil when it is JSON but not an object.
func decodeObject(body []byte) (obj map[string]json.RawMessage, bad error) {
	err := json.Unmarshal(body, &obj)
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

// jsonBody decodes the request body as a JSON object, or answers 400 and returns false.
func jsonBody(c *gin.Context) (map[string]json.RawMessage, bool) {
	body, err := c.GetRawData()
	if err == nil {
		var obj map[string]json.RawMessage
		if obj, err = decodeObject(body); err == nil {
			return obj, true
		}
	}
	c.JSON(http.StatusBadRequest, gin.H{"success": false, "error": "invalid JSON: " + err.Error()})
	return nil, false
}

func invalid(c *gin.Context, fields []string) {
	c.JSON(http.StatusBadRequest, gin.H{"success": false, "error": "invalid request", "fields": fields})
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT (default 127.0.0.1:$PORT)")
	path := flag.String("protocols", os.Getenv("PROTOCOLS"), "protocols.json fixture")
	flag.Parse()
	if *listen == "" {
		*listen = "127.0.0.1:" + os.Getenv("PORT")
	}
	loadProtocols(*path)

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())

	r.GET("/api/v1/protocols/:id", func(c *gin.Context) {
		id := c.Param("id")
		p := protocols[id]
		if p == nil {
			c.JSON(http.StatusNotFound, gin.H{"error": "protocol not found", "id": id})
			return
		}
		c.JSON(http.StatusOK, p)
	})

	r.POST("/api/epro/submit", func(c *gin.Context) {
		obj, ok := jsonBody(c)
		if !ok {
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
			invalid(c, fields)
			return
		}
		data := append([]byte(nil), obj["reportData"]...)
		reportsMu.Lock()
		reports[pid] = data
		reportN++
		reportsMu.Unlock()
		c.JSON(http.StatusOK, gin.H{"success": true, "message": "report accepted"})
	})

	r.POST("/api/v1/tags/add", func(c *gin.Context) {
		obj, ok := jsonBody(c)
		if !ok {
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
			invalid(c, fields)
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
		c.JSON(http.StatusOK, gin.H{"success": true})
	})

	r.GET("/api/v1/sleep", func(c *gin.Context) {
		time.Sleep(50 * time.Millisecond)
		c.JSON(http.StatusOK, gin.H{"ok": true})
	})

	if err := r.Run(*listen); err != nil {
		log.Fatal(err)
	}
}
