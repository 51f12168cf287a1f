// The sample clinical app on Gin, with durable ePRO submissions: what a Gin team would write so that
// no acknowledged submission is ever lost. Each POST /api/epro/submit is one INSERT into PostgreSQL
// (a prepared statement through database/sql with lib/pq, a pool of 100 connections, autocommit, the
// server's synchronous_commit=on): the 200 is sent only once the row's commit is on disk. Retries carrying the
// same Idempotency-Key header (or submissionId field) get the original receipt; the same key with
// another body is refused with 422. The other routes are the Gin peer's, in memory.
//
//	ginpg-peer -listen 127.0.0.1:8081 -protocols data/protocols.json \
//	    -dsn 'host=/tmp/pg port=5432 user=postgres dbname=bench sslmode=disable'
//
// PORT / PROTOCOLS / DATABASE_URL in the environment are used when the flags are absent.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	_ "github.com/lib/pq"
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
	db        *sql.DB
	insertSt  *sql.Stmt // prepared once; database/sql prepares it again on each pooled connection
	originSt  *sql.Stmt

	tagsMu sync.Mutex
	tags   = map[string]map[string]struct{}{}
	tagN   uint64
)

// The schema, applied at start (what a team's first migration would hold).
const schema = `
CREATE TABLE IF NOT EXISTS epro_submissions (
	id              bigserial PRIMARY KEY,
	receipt_id      text NOT NULL UNIQUE,
	patient_id      text NOT NULL,
	idempotency_key text,
	fingerprint     text NOT NULL,
	report_data     jsonb NOT NULL,
	captured_at     text,
	received_at     timestamptz NOT NULL,
	UNIQUE (patient_id, idempotency_key)
)`

const insertSQL = `
INSERT INTO epro_submissions
	(receipt_id, patient_id, idempotency_key, fingerprint, report_data, captured_at, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (patient_id, idempotency_key) DO NOTHING
RETURNING receipt_id`

const originalSQL = `
SELECT receipt_id, fingerprint, received_at FROM epro_submissions
WHERE patient_id = $1 AND idempotency_key = $2`

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
func jsonBody(c *gin.Context) ([]byte, map[string]json.RawMessage, bool) {
	body, err := c.GetRawData()
	if err == nil {
		var obj map[string]json.RawMessage
		if obj, err = decodeObject(body); err == nil {
			return body, obj, true
		}
	}
	c.JSON(http.StatusBadRequest, gin.H{"success": false, "error": "invalid JSON: " + err.Error()})
	return nil, nil, false
}

func invalid(c *gin.Context, fields []string) {
	c.JSON(http.StatusBadRequest, gin.H{"success": false, "error": "invalid request", "fields": fields})
}

func unavailable(c *gin.Context, err error) {
	log.Printf("epro submit: %v", err)
	c.Header("Retry-After", "1")
	c.JSON(http.StatusServiceUnavailable, gin.H{"success": false, "error": "storage unavailable, retry later"})
}

func newReceiptID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

const rfc3339Millis = "2006-01-02T15:04:05.000Z07:00"

func accepted(c *gin.Context, id string, at time.Time) {
	c.JSON(http.StatusOK, gin.H{"success": true, "message": "report accepted",
		"receipt": gin.H{"id": id, "receivedAt": at.UTC().Format(rfc3339Millis)}})
}

func submit(c *gin.Context) {
	body, obj, ok := jsonBody(c)
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
	key := c.GetHeader("Idempotency-Key")
	if raw, present := obj["submissionId"]; present && key == "" {
		if key, ok = nonEmptyString(raw); !ok {
			fields = append(fields, "submissionId")
		}
	}
	var captured sql.NullString
	if raw, present := obj["capturedAt"]; present {
		if captured.String, captured.Valid = nonEmptyString(raw); !captured.Valid {
			fields = append(fields, "capturedAt")
		}
	}
	if fields != nil {
		invalid(c, fields)
		return
	}
	var idem sql.NullString
	if key != "" {
		idem = sql.NullString{String: key, Valid: true}
	}
	sum := sha256.Sum256(body)
	fp := hex.EncodeToString(sum[:])
	receipt := newReceiptID()
	now := time.Now().UTC()

	var got string
	err := insertSt.QueryRowContext(c.Request.Context(), receipt, pid, idem, fp,
		[]byte(obj["reportData"]), captured, now).Scan(&got)
	if err == nil {
		accepted(c, got, now)
		return
	}
	if err != sql.ErrNoRows {
		unavailable(c, err)
		return
	}
	// the key was seen before: the original receipt, or 422 for another body under the same key
	var origFP string
	var origAt time.Time
	if err := originSt.QueryRowContext(c.Request.Context(), pid, key).Scan(&got, &origFP, &origAt); err != nil {
		unavailable(c, err)
		return
	}
	if origFP != fp {
		c.JSON(http.StatusUnprocessableEntity, gin.H{"success": false,
			"error": "this Idempotency-Key was used for another submission"})
		return
	}
	accepted(c, got, origAt)
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT (default 127.0.0.1:$PORT)")
	path := flag.String("protocols", os.Getenv("PROTOCOLS"), "protocols.json fixture")
	dsn := flag.String("dsn", os.Getenv("DATABASE_URL"), "lib/pq connection string")
	pool := flag.Int("pool", 100, "database connections in the pool")
	flag.Parse()
	if *listen == "" {
		*listen = "127.0.0.1:" + os.Getenv("PORT")
	}
	loadProtocols(*path)

	var err error
	if db, err = sql.Open("postgres", *dsn); err != nil {
		log.Fatalf("open: %v", err)
	}
	db.SetMaxOpenConns(*pool)
	db.SetMaxIdleConns(*pool) // database/sql keeps only 2 idle by default: every burst would reconnect
	db.SetConnMaxLifetime(0)
	if _, err := db.Exec(schema); err != nil {
		log.Fatalf("schema: %v", err)
	}
	if insertSt, err = db.Prepare(insertSQL); err != nil {
		log.Fatalf("prepare: %v", err)
	}
	if originSt, err = db.Prepare(originalSQL); err != nil {
		log.Fatalf("prepare: %v", err)
	}

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

	r.POST("/api/epro/submit", submit)

	r.POST("/api/v1/tags/add", func(c *gin.Context) {
		_, obj, ok := jsonBody(c)
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
