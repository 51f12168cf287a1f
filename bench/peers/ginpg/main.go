// The sample clinical app on Gin, with durable ePRO submissions: what a Gin team would write so that
// no acknowledged submission is ever lost. Each POST /api/epro/submit is one transaction in
// PostgreSQL (database/sql with lib/pq, a pool of 100 connections, the server's
// synchronous_commit=on): the submission's INSERT and its audit entry, chained to the previous entry
// by SHA-256 as triage's audit trail is (core/audit.h: the same canonical form), so that the two
// peers do the same work per submission; the 200 is sent only once the commit is on disk. The chain's
// head is one row read with SELECT ... FOR UPDATE: concurrent submissions take turns at it, so there
// is one chain. Retries carrying the same Idempotency-Key header (or submissionId field) get the
// original receipt and write nothing; the same key with another body is refused with 422. No bearer
// token is checked (the audit entry's who is "anonymous"). The other routes are the Gin peer's, in
// memory.
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
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
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
	headSt    *sql.Stmt
	auditSt   *sql.Stmt
	moveSt    *sql.Stmt

	tagsMu sync.Mutex
	tags   = map[string]map[string]struct{}{}
	tagN   uint64
)

// The schema, applied at start (what a team's first migration would hold). audit_head holds the
// last entry's seq and hash (one row): locking it orders the entries.
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
);
CREATE TABLE IF NOT EXISTS audit_trail (
	seq          bigint PRIMARY KEY,
	at           text NOT NULL,
	who          text NOT NULL,
	action       text NOT NULL,
	record_table text,
	record_id    text,
	route        text,
	request_id   text,
	before       text,
	after        text,
	reason       text,
	prev_hash    text NOT NULL,
	hash         text NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
	one  boolean PRIMARY KEY DEFAULT true CHECK (one),
	seq  bigint NOT NULL,
	hash text NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, repeat('0', 64)) ON CONFLICT DO NOTHING`

const headSQL = `SELECT seq, hash FROM audit_head FOR UPDATE`

const auditSQL = `
INSERT INTO audit_trail
	(seq, at, who, action, record_table, record_id, route, request_id, before, after, reason, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, NULL, $10, $11)`

const moveHeadSQL = `UPDATE audit_head SET seq = $1, hash = $2`

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

// auditHash is SHA-256 over an entry's canonical form, as core/audit.h defines it: "triage-audit-1",
// then "name=" and "null" or "<length>:<value>" for each field in order (prev_hash last), one a line.
// A nil field is SQL NULL.
func auditHash(fields [12]*string) string {
	names := [12]string{"seq", "at", "who", "action", "record_table", "record_id", "route", "request_id",
		"before", "after", "reason", "prev_hash"}
	h := sha256.New()
	h.Write([]byte("triage-audit-1\n"))
	for i, v := range fields {
		if v == nil {
			fmt.Fprintf(h, "%s=null\n", names[i])
		} else {
			fmt.Fprintf(h, "%s=%d:%s\n", names[i], len(*v), *v)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// store writes the submission and its audit entry in one transaction. inserted is false when the
// key was stored already (nothing is written then).
func store(c *gin.Context, receipt, pid string, idem sql.NullString, fp string, report []byte,
	captured sql.NullString, now time.Time) (inserted bool, err error) {
	ctx := c.Request.Context()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() // a no-op once committed
	var got string
	if err = tx.StmtContext(ctx, insertSt).QueryRowContext(ctx, receipt, pid, idem, fp, report, captured,
		now).Scan(&got); err != nil {
		if err == sql.ErrNoRows {
			return false, nil
		}
		return false, err
	}
	var seq int64
	var prev string
	if err = tx.StmtContext(ctx, headSt).QueryRowContext(ctx).Scan(&seq, &prev); err != nil {
		return false, err
	}
	seq++
	after, err := json.Marshal(struct {
		ReceiptID  string          `json:"receiptId"`
		PatientID  string          `json:"patientId"`
		CapturedAt *string         `json:"capturedAt"`
		ReceivedAt string          `json:"receivedAt"`
		ReportData json.RawMessage `json:"reportData"`
	}{receipt, pid, nullable(captured), now.Format(rfc3339Millis), report})
	if err != nil {
		return false, err
	}
	seqText, at, afterText := strconv.FormatInt(seq, 10), time.Now().UTC().Format(rfc3339Millis), string(after)
	who, action, table, route := "anonymous", "create", "epro_submissions", "POST /api/epro/submit"
	requestID := c.GetHeader("X-Request-Id")
	if requestID == "" {
		requestID = newReceiptID()
	}
	hash := auditHash([12]*string{&seqText, &at, &who, &action, &table, &receipt, &route, &requestID, nil,
		&afterText, nil, &prev})
	if _, err = tx.StmtContext(ctx, auditSt).ExecContext(ctx, seq, at, who, action, table, receipt, route,
		requestID, afterText, prev, hash); err != nil {
		return false, err
	}
	if _, err = tx.StmtContext(ctx, moveSt).ExecContext(ctx, seq, hash); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

func nullable(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

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

	inserted, err := store(c, receipt, pid, idem, fp, []byte(obj["reportData"]), captured, now)
	if err != nil {
		unavailable(c, err)
		return
	}
	if inserted {
		accepted(c, receipt, now)
		return
	}
	// the key was seen before: the original receipt, or 422 for another body under the same key
	var got, origFP string
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
	if headSt, err = db.Prepare(headSQL); err != nil {
		log.Fatalf("prepare: %v", err)
	}
	if auditSt, err = db.Prepare(auditSQL); err != nil {
		log.Fatalf("prepare: %v", err)
	}
	if moveSt, err = db.Prepare(moveHeadSQL); err != nil {
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
