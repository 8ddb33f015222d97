/* check_msg.c - unit tests for the internal message codec (msg.h): every
 * type round-trips, and every malformed variant is rejected whole. */
#include "config.h"
#include "msg.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static void fill(struct msg *m, unsigned type)
{
    msg_init(m, type);
    m->trace = 0x1122334455667788ULL;
    m->id = 42;
    m->num = 7;
    for (int i = 0; i < m->nfields; i++) msg_set(m, (unsigned)i, "x");
    if (type == MSG_HELLO || type == MSG_HELLO_ACK || type == MSG_GOODBYE || type == MSG_HEARTBEAT ||
        type == MSG_PEER_UP || type == MSG_PEER_DOWN)
        m->kind = ROLE_SM;
    else if (m->nfields == 5 || type == MSG_CONN_ELEMENT)
        m->kind = KIND_MESSAGE;
}

START_TEST(every_type_round_trips)
{
    for (unsigned t = 1; t < MSG_TYPE_END; t++) {
        if (msg_type_fields(t) < 0) continue;
        struct msg m, d;
        struct buf b = { 0 };
        fill(&m, t);
        ck_assert_int_eq(msg_encode(&m, &b), 0);
        size_t used;
        const char *err;
        ck_assert_msg(msg_decode(b.data, b.len, &d, &used, &err) == 0, "type %s: %s", msg_type_name(t), err);
        ck_assert_uint_eq(used, b.len);
        ck_assert_uint_eq(d.type, t);
        ck_assert(d.trace == m.trace && d.id == m.id && d.num == m.num && d.kind == m.kind);
        for (int i = 0; i < d.nfields; i++) ck_assert(msg_eq(&d, (unsigned)i, "x"));
        buf_free(&b);
    }
}
END_TEST

START_TEST(batch_of_records)
{
    struct buf b = { 0 };
    struct msg m;
    for (int i = 0; i < 100; i++) {
        msg_init(&m, MSG_STANZA);
        m.kind = KIND_MESSAGE;
        m.id = (uint64_t)i;
        msg_set(&m, 0, "alice@example.com/a");
        msg_set(&m, 1, "bob@example.com");
        msg_set(&m, 3, "c2s-1");
        msg_set(&m, 4, "<message xmlns='jabber:client'><body>hi</body></message>");
        ck_assert_int_eq(msg_encode(&m, &b), 0);
    }
    size_t off = 0;
    int n = 0;
    while (off < b.len) {
        size_t used;
        const char *err;
        ck_assert_int_eq(msg_decode(b.data + off, b.len - off, &m, &used, &err), 0);
        ck_assert_uint_eq(m.id, (uint64_t)n);
        off += used;
        n++;
    }
    ck_assert_int_eq(n, 100);
    buf_free(&b);
}
END_TEST

static struct buf encoded_stanza(void)
{
    struct buf b = { 0 };
    struct msg m;
    msg_init(&m, MSG_STANZA);
    m.kind = KIND_MESSAGE;
    m.stype = STYPE_CHAT;
    msg_set(&m, 0, "alice@example.com/a");
    msg_set(&m, 1, "bob@example.com");
    msg_set(&m, 3, "c2s-1");
    msg_set(&m, 4, "<message/>");
    ck_assert_int_eq(msg_encode(&m, &b), 0);
    return b;
}

static int decodes(const struct buf *b)
{
    struct msg m;
    size_t used;
    const char *err;
    return msg_decode(b->data, b->len, &m, &used, &err) == 0;
}

START_TEST(truncation_at_every_length_rejected)
{
    struct buf b = encoded_stanza();
    for (size_t n = 0; n < b.len; n++) {
        struct buf t = { 0 };
        buf_add(&t, b.data, n);
        /* the length field still says the whole record */
        ck_assert_msg(!decodes(&t), "accepted a record cut at %zu", n);
        buf_free(&t);
    }
    buf_free(&b);
}
END_TEST

START_TEST(header_corruptions_rejected)
{
    struct buf b = encoded_stanza();
    struct { size_t off; unsigned char val; const char *what; } cases[] = {
        { 4, 0, "type 0" }, { 4, 200, "unknown type" }, { 6, 0xff, "unknown flags" },
        { 28, 99, "kind out of range" }, { 29, 99, "stype out of range" }, { 30, 4, "field count" },
        { 30, 7, "field count above max" }, { 31, 1, "reserved byte" }, { 0, 10, "length below header" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct buf t = { 0 };
        buf_add(&t, b.data, b.len);
        t.data[cases[i].off] = (char)cases[i].val;
        ck_assert_msg(!decodes(&t), "accepted: %s", cases[i].what);
        buf_free(&t);
    }
    buf_free(&b);
}
END_TEST

START_TEST(field_corruptions_rejected)
{
    struct buf b = encoded_stanza();
    /* first field length (at 32) made to overrun the record */
    struct buf t = { 0 };
    buf_add(&t, b.data, b.len);
    t.data[32] = (char)0xff;
    ck_assert(!decodes(&t));
    /* trailing garbage inside the declared length */
    buf_clear(&t);
    buf_add(&t, b.data, b.len);
    buf_add(&t, "zz", 2);
    uint32_t len = (uint32_t)t.len;
    memcpy(t.data, &len, 4);
    ck_assert(!decodes(&t));
    buf_free(&t);
    buf_free(&b);
}
END_TEST

START_TEST(text_fields_must_be_utf8)
{
    const char *bad[] = { "a\0b", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80" };
    size_t lens[] = { 3, 2, 3, 4, 2, 1 };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct msg m;
        struct buf b = { 0 };
        msg_init(&m, MSG_STANZA);
        msg_set(&m, 3, "c2s-1");
        msg_setn(&m, 4, bad[i], lens[i]);
        ck_assert_msg(msg_encode(&m, &b) < 0, "encoder accepted bad text %zu", i);
        buf_free(&b);
    }
    struct msg m;
    struct buf b = { 0 };
    msg_init(&m, MSG_STANZA);
    msg_set(&m, 3, "c2s-1");
    msg_set(&m, 4, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    ck_assert_int_eq(msg_encode(&m, &b), 0);
    buf_free(&b);
}
END_TEST

START_TEST(required_fields)
{
    struct msg m;
    struct buf b = { 0 };
    msg_init(&m, MSG_STANZA); /* origin (f3) is required */
    ck_assert_int_lt(msg_encode(&m, &b), 0);
    msg_init(&m, MSG_HELLO); /* instance name is required */
    ck_assert_int_lt(msg_encode(&m, &b), 0);
    msg_init(&m, MSG_DELIVER); /* recipient is required */
    msg_set(&m, 3, "sm-0");
    ck_assert_int_lt(msg_encode(&m, &b), 0);
    buf_free(&b);
}
END_TEST

START_TEST(stanza_types)
{
    ck_assert_uint_eq(stanza_type_parse(KIND_MESSAGE, "chat"), STYPE_CHAT);
    ck_assert_uint_eq(stanza_type_parse(KIND_MESSAGE, NULL), STYPE_NONE);
    ck_assert_uint_eq(stanza_type_parse(KIND_MESSAGE, "get"), STYPE_INVALID);
    ck_assert_uint_eq(stanza_type_parse(KIND_IQ, "result"), STYPE_RESULT);
    ck_assert_uint_eq(stanza_type_parse(KIND_PRESENCE, "probe"), STYPE_PROBE);
    ck_assert_uint_eq(stanza_type_parse(KIND_PRESENCE, "chat"), STYPE_INVALID);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("msg");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, every_type_round_trips);
    tcase_add_test(tc, batch_of_records);
    tcase_add_test(tc, truncation_at_every_length_rejected);
    tcase_add_test(tc, header_corruptions_rejected);
    tcase_add_test(tc, field_corruptions_rejected);
    tcase_add_test(tc, text_fields_must_be_utf8);
    tcase_add_test(tc, required_fields);
    tcase_add_test(tc, stanza_types);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
