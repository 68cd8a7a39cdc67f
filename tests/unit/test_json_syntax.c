/*
 * test_json_syntax.c — jsyn_valid, the non-allocating JSON check that tells a cJSON
 * out-of-memory failure from a syntax error: it accepts what JSON allows, refuses what it
 * does not, and never accepts a text cJSON refuses (which would turn a 400 into a 503).
 */
#include <string.h>

#include <cjson/cJSON.h>

#include "../../engine/json_syntax.h"
#include "testutil.h"

static const char *const VALID[] = {
    "{}", "[]", "0", "-0", "1.5e-3", "-12.25E+7", "true", "false", "null", "\"\"",
    " \t\n{ \"a\" : [1, 2, {\"b\": null}], \"c\": \"x\\\"y\\\\z\\/\\b\\f\\n\\r\\t\" } ",
    "\"\\u00e9\\uD83D\\uDE00\"", "[[[[[]]]]]", "{\"a\":{\"b\":{\"c\":[true,false]}}}",
    "\"caf\xc3\xa9\"", "[1,\"2\",[3],{\"4\":5}]",
};

static const char *const INVALID[] = {
    "", " ", "{", "[", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{1: 2}", "[1 2]",
    "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\uDE00\"", "\"\\uD83D\"", "\"\\uD83D\\u0041\"",
    "01", "1.", ".5", "-", "+1", "1e", "1e+", "1.2.3", "tru", "nul", "NaN",
    "Infinity", "{\"a\":}", "[1]]", "0x10", /* the last two: a value, then other bytes */
};

START_TEST(accepts_json)
{
    for (size_t i = 0; i < sizeof VALID / sizeof VALID[0]; i++) {
        size_t end = 0;
        ck_assert_msg(jsyn_valid(VALID[i], strlen(VALID[i]), -1, &end), "refused %s", VALID[i]);
        cJSON *j = cJSON_ParseWithLength(VALID[i], strlen(VALID[i]));
        ck_assert_msg(j != NULL, "cJSON refuses %s", VALID[i]);
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(refuses_what_is_not_json)
{
    for (size_t i = 0; i < sizeof INVALID / sizeof INVALID[0]; i++) {
        size_t end = 0;
        bool ok = jsyn_valid(INVALID[i], strlen(INVALID[i]), -1, &end);
        if (strcmp(INVALID[i], "[1]]") == 0 || strcmp(INVALID[i], "0x10") == 0) {
            /* one value, then bytes the caller looks at (as cJSON_ParseWithLength does) */
            ck_assert(ok);
            ck_assert_uint_eq(end, INVALID[i][0] == '[' ? 3 : 1);
            continue;
        }
        ck_assert_msg(!ok, "accepted %s", INVALID[i]);
    }
}
END_TEST

START_TEST(never_accepts_what_cjson_refuses)
{
    /* every prefix of the valid texts, and every single-byte change of them */
    for (size_t i = 0; i < sizeof VALID / sizeof VALID[0]; i++) {
        size_t n = strlen(VALID[i]);
        char buf[256];
        ck_assert_uint_lt(n, sizeof buf);
        for (size_t cut = 0; cut <= n; cut++) {
            if (jsyn_valid(VALID[i], cut, -1, NULL)) {
                cJSON *j = cJSON_ParseWithLength(VALID[i], cut);
                ck_assert_msg(j != NULL, "accepted %.*s, which cJSON refuses", (int)cut, VALID[i]);
                cJSON_Delete(j);
            }
        }
        static const char SUBST[] = "{}[]\",:\\u0e.-+ 9aX\x01";
        for (size_t k = 0; k < n; k++)
            for (size_t s = 0; s < sizeof SUBST - 1; s++) {
                memcpy(buf, VALID[i], n);
                buf[k] = SUBST[s];
                if (jsyn_valid(buf, n, -1, NULL)) {
                    cJSON *j = cJSON_ParseWithLength(buf, n);
                    ck_assert_msg(j != NULL, "accepted %.*s, which cJSON refuses", (int)n, buf);
                    cJSON_Delete(j);
                }
            }
    }
}
END_TEST

START_TEST(depth_and_number_length_limits)
{
    char deep[2100];
    for (int i = 0; i < 1000; i++)
        deep[i] = '[', deep[2000 - 1 - i] = ']';
    ck_assert(jsyn_valid(deep, 2000, -1, NULL));
    ck_assert(!jsyn_valid(deep, 2000, 999, NULL));
    memmove(deep + 1, deep, 2000);
    deep[0] = '[', deep[2001] = ']';
    ck_assert(!jsyn_valid(deep, 2002, -1, NULL)); /* 1001 levels: over cJSON's limit */
    cJSON *j = cJSON_ParseWithLength(deep, 2002);
    ck_assert_ptr_null(j);
    char num[80];
    memset(num, '1', 63);
    ck_assert(jsyn_valid(num, 63, -1, NULL));
    memset(num, '1', 64);
    ck_assert(!jsyn_valid(num, 64, -1, NULL)); /* cJSON reads 63 characters of a number */
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("json_syntax");
    TCase *tc = tcase_create("jsyn");
    tcase_add_test(tc, accepts_json);
    tcase_add_test(tc, refuses_what_is_not_json);
    tcase_add_test(tc, never_accepts_what_cjson_refuses);
    tcase_add_test(tc, depth_and_number_length_limits);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
