/* core/audit.c: the canonical form of an entry (as audit.h documents it) and its hash. */
#include <string.h>

#include "audit.h"
#include "sha256.h"
#include "test.h"

#define CANONICAL                                                                                                      \
    "triage-audit-1\n"                                                                                                 \
    "seq=1:7\n"                                                                                                        \
    "at=24:2026-11-27T08:00:00.000Z\n"                                                                                 \
    "who=7:dr.chen\n"                                                                                                  \
    "action=6:create\n"                                                                                                \
    "record_table=12:patient_tags\n"                                                                                   \
    "record_id=null\n"                                                                                                 \
    "route=21:POST /api/v1/tags/add\n"                                                                                 \
    "request_id=0:\n"                                                                                                  \
    "before=null\n"                                                                                                    \
    "after=9:{\"a\":\"b\"}\n"                                                                                          \
    "reason=null\n"                                                                                                    \
    "prev_hash=64:" TR_AUDIT_GENESIS "\n"

static void set(tr_audit_entry_t *e, int field, const char *value)
{
    e->value[field] = value;
    e->len[field] = value != NULL ? strlen(value) : 0;
}

static void sample(tr_audit_entry_t *e)
{
    memset(e, 0, sizeof(*e));
    set(e, TR_AUDIT_SEQ, "7");
    set(e, TR_AUDIT_AT, "2026-11-27T08:00:00.000Z");
    set(e, TR_AUDIT_WHO, "dr.chen");
    set(e, TR_AUDIT_ACTION, "create");
    set(e, TR_AUDIT_RECORD_TABLE, "patient_tags");
    set(e, TR_AUDIT_ROUTE, "POST /api/v1/tags/add");
    set(e, TR_AUDIT_REQUEST_ID, "");
    set(e, TR_AUDIT_AFTER, "{\"a\":\"b\"}");
    set(e, TR_AUDIT_PREV_HASH, TR_AUDIT_GENESIS);
}

TEST_IMPL(audit_canonical)
{
    tr_audit_entry_t e;
    sample(&e);
    char out[1024];
    size_t n = tr_audit_canonical(&e, out, sizeof(out));
    ASSERT_UINT_EQ(n, strlen(CANONICAL));
    ASSERT_MEM_EQ(out, n, CANONICAL);
    /* Too small a buffer: the full length still comes back, and the prefix that fits is written. */
    char small[20];
    memset(small, 'x', sizeof(small));
    ASSERT_UINT_EQ(tr_audit_canonical(&e, small, 16), strlen(CANONICAL));
    ASSERT(memcmp(small, CANONICAL, 16) == 0);
    ASSERT_INT_EQ(small[16], 'x');
}

TEST_IMPL(audit_hash)
{
    tr_audit_entry_t e;
    sample(&e);
    char hex[65];
    tr_audit_hash(&e, hex);
    /* sha256sum of CANONICAL */
    ASSERT_STR_EQ(hex, "59400c53e0f429554d5bd2f933ec255b43e9f8fcd5543c27d3a886bbd3693d5a");
    /* An empty record_id is not a NULL one. */
    set(&e, TR_AUDIT_RECORD_ID, "");
    tr_audit_hash(&e, hex);
    ASSERT_STR_EQ(hex, "760b53b0b4c963c7806fde9aa22685bdec76e71aaa4e26fcf275fc23a281cf22");
    /* A value longer than the stack buffer hashes the same as its canonical form built in full. */
    static char big[5000], whole[6000];
    memset(big, 'q', sizeof(big) - 1);
    set(&e, TR_AUDIT_BEFORE, big);
    size_t n = tr_audit_canonical(&e, whole, sizeof(whole));
    ASSERT(n < sizeof(whole));
    char want[65];
    tr_sha256_hex(whole, n, want);
    tr_audit_hash(&e, hex);
    ASSERT_STR_EQ(hex, want);
}
