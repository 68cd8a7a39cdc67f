/*
 * test_config.c — server/config.c: defaults, flags (`--name value` and `--name=value`),
 * INNSERVE_* variables (flags win), units (sizes, durations), messages naming the option
 * and the allowed range, and the --help text listing every option with its variable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/config.h"
#include "../unit/testutil.h"

static bool parse(struct srv_config *c, char *err, int argc, const char *const *argv)
{
    return srv_config_parse(c, argc, (char **)argv, err, 256);
}

START_TEST(defaults_are_the_documented_ones)
{
    struct srv_config c;
    char err[256];
    const char *argv[] = {"innserve"};
    unsetenv("INNSERVE_BATCH_DELAY_US");
    ck_assert(parse(&c, err, 1, argv));
    ck_assert_str_eq(c.models, "models");
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.workers, 0);
    ck_assert_int_eq(c.queue, 256);
    ck_assert_int_eq(c.deadline_ms, 30000);
    ck_assert_int_eq(c.batch_delay_us, 100);
    ck_assert_int_eq(c.inline_rows, 0);
    ck_assert(c.access_log);
    ck_assert(!c.help && !c.version);
    srv_config_free(&c);
}
END_TEST

START_TEST(flags_override_variables)
{
    struct srv_config c;
    char err[256];
    setenv("INNSERVE_BATCH_DELAY_US", "7", 1);
    setenv("INNSERVE_QUEUE", "9", 1);
    const char *argv[] = {"innserve", "--batch-delay-us", "250", "--port=0", "--max-body", "16M",
                          "--drain-timeout", "500ms", "--access-log", "off"};
    ck_assert(parse(&c, err, 10, argv));
    ck_assert_int_eq(c.batch_delay_us, 250); /* the flag wins */
    ck_assert_int_eq(c.queue, 9);            /* the variable applies */
    ck_assert_int_eq(c.port, 0);
    ck_assert_uint_eq(c.lim.max_body_bytes, 16u << 20);
    ck_assert_double_eq(c.drain_timeout_s, 0.5);
    ck_assert(!c.access_log);
    srv_config_free(&c);
    const char *none[] = {"innserve"};
    ck_assert(parse(&c, err, 1, none));
    ck_assert_int_eq(c.batch_delay_us, 7);
    srv_config_free(&c);
    unsetenv("INNSERVE_BATCH_DELAY_US");
    unsetenv("INNSERVE_QUEUE");
}
END_TEST

START_TEST(bad_values_name_the_option)
{
    struct srv_config c;
    char err[256];
    const char *neg[] = {"innserve", "--batch-delay-us", "-1"};
    ck_assert(!parse(&c, err, 3, neg));
    ck_assert_str_eq(err, "--batch-delay-us: '-1' is not an integer between 0 and 1e+06");
    srv_config_free(&c);
    const char *frac[] = {"innserve", "--workers=1.5"};
    ck_assert(!parse(&c, err, 2, frac));
    ck_assert_str_eq(err, "--workers: '1.5' is not an integer between 0 and 1024");
    srv_config_free(&c);
    const char *unknown[] = {"innserve", "--batch-size", "4"};
    ck_assert(!parse(&c, err, 3, unknown));
    ck_assert_str_eq(err, "unknown option '--batch-size' (see --help)");
    srv_config_free(&c);
    const char *missing[] = {"innserve", "--deadline-ms"};
    ck_assert(!parse(&c, err, 2, missing));
    ck_assert_str_eq(err, "option --deadline-ms needs a value");
    srv_config_free(&c);
    setenv("INNSERVE_BATCH_DELAY_US", "soon", 1);
    const char *none[] = {"innserve"};
    ck_assert(!parse(&c, err, 1, none));
    ck_assert_str_eq(err, "INNSERVE_BATCH_DELAY_US: 'soon' is not an integer between 0 and "
                     "1e+06");
    srv_config_free(&c);
    unsetenv("INNSERVE_BATCH_DELAY_US");
}
END_TEST

START_TEST(help_lists_every_option_and_its_variable)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    srv_config_help(f);
    fclose(f);
    const char *want[] = {"--models", "INNSERVE_MODELS", "--workers", "--queue", "--deadline-ms",
                          "--batch-delay-us", "INNSERVE_BATCH_DELAY_US", "--inline-rows",
                          "--max-body", "INNSERVE_MAX_BODY", "--help"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "--help lacks %s", want[i]);
    free(text);
    ck_assert_int_ge(srv_cpu_count(), 1);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("server_config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults_are_the_documented_ones);
    tcase_add_test(tc, flags_override_variables);
    tcase_add_test(tc, bad_values_name_the_option);
    tcase_add_test(tc, help_lists_every_option_and_its_variable);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
