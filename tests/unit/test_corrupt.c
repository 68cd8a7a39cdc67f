/*
 * test_corrupt.c — the corpus of broken checkpoints in tests/fixtures/corrupt/: each
 * <name>.safetensors must be refused with a message containing the substring in
 * <name>.expect and naming the file; none may crash or read out of bounds (this suite
 * runs under ASan/UBSan in `make test`).  Also truncates a valid file at every length.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../engine/safetensors.h"
#include "testutil.h"

#define CORRUPT_DIR "tests/fixtures/corrupt"

START_TEST(every_broken_file_is_refused_with_its_message)
{
    DIR *dir = opendir(CORRUPT_DIR);
    ck_assert_msg(dir != NULL, "run from the repository root");
    struct dirent *de;
    int count = 0, bad = 0;
    while ((de = readdir(dir))) {
        size_t l = strlen(de->d_name);
        const char *suf = ".safetensors";
        if (l <= strlen(suf) || strcmp(de->d_name + l - strlen(suf), suf) != 0)
            continue;
        char path[512], epath[512];
        snprintf(path, sizeof(path), CORRUPT_DIR "/%s", de->d_name);
        snprintf(epath, sizeof(epath), CORRUPT_DIR "/%.*s.expect", (int)(l - strlen(suf)),
                 de->d_name);
        char err[ENG_ERR_LEN];
        struct eng_model *m = NULL;
        enum eng_status st = eng_model_load(path, &m, err);
        if (strcmp(de->d_name, "valid_base.safetensors") == 0) {
            ck_assert_msg(st == ENG_OK, "valid_base must load: %s", err);
            eng_model_unref(m);
            continue;
        }
        char *want = tu_slurp(epath, NULL);
        ck_assert_msg(want != NULL, "missing %s", epath);
        want[strcspn(want, "\n")] = 0;
        ck_assert_msg(st != ENG_OK && m == NULL, "%s was accepted", path);
        if (strstr(err, want) == NULL || strncmp(err, path, strlen(path)) != 0) {
            fprintf(stderr, "%s: message '%s' lacks '%s' or the file name\n", de->d_name, err,
                    want);
            bad++;
        }
        free(want);
        count++;
    }
    closedir(dir);
    ck_assert_int_ge(count, 20);
    ck_assert_msg(bad == 0, "%d of %d messages lack their expected text (see stderr)", bad, count);
}
END_TEST

/* Load a file made of the 8-byte length and `header` (then `data`); returns the status. */
static enum eng_status load_header(const char *header, const char *data, char err[ENG_ERR_LEN])
{
    char path[] = "/tmp/innserve-dup-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    uint64_t hl = strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(hl >> (8 * i));
    ck_assert_int_eq(write(fd, len8, 8), 8);
    ck_assert_int_eq(write(fd, header, hl), (ssize_t)hl);
    ck_assert_int_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    close(fd);
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err);
    eng_model_unref(m);
    unlink(path);
    return st;
}

/* A key twice in one object: cJSON keeps both, and the second __metadata__ used to be
 * written past the first one's array (a heap overflow).  Every such file is refused. */
START_TEST(duplicate_keys_are_refused)
{
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(load_header("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},"
                                 "\"__metadata__\":{\"d\":\"4\"}}", "", err), ENG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "duplicate key \"__metadata__\" in the header") != NULL, "%s", err);
    ck_assert_int_eq(load_header("{\"__metadata__\":{\"format\":\"innserve\",\"format\":\"x\"}}",
                                 "", err), ENG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "duplicate key \"format\" in __metadata__") != NULL, "%s", err);
    ck_assert_int_eq(load_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                 "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                                 "abcd", err), ENG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "duplicate key \"w\" in the header") != NULL, "%s", err);
    ck_assert_int_eq(load_header("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[1],"
                                 "\"data_offsets\":[0,4]}}", "abcd", err), ENG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "duplicate key \"dtype\" in w") != NULL, "%s", err);
    /* the manifest inside __metadata__ is checked too */
    ck_assert_int_eq(load_header("{\"__metadata__\":{\"format\":\"innserve\",\"manifest\":"
                                 "\"{\\\"kind\\\":\\\"flow\\\",\\\"kind\\\":\\\"mlp\\\"}\"}}",
                                 "", err), ENG_ERR_MANIFEST);
    ck_assert_msg(strstr(err, "duplicate key \"kind\" in the manifest") != NULL, "%s", err);
}
END_TEST

/* A FIFO (or any special file) in place of a checkpoint is refused at once: opening it
 * must not wait for a writer. */
START_TEST(a_fifo_is_refused_without_blocking)
{
    char dir[] = "/tmp/innserve-fifo-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    alarm(5); /* a blocking open would hang here: SIGALRM fails the test */
    enum eng_status st = eng_model_load(path, &m, err);
    alarm(0);
    ck_assert_int_eq(st, ENG_ERR_IO);
    ck_assert_msg(strstr(err, "not a regular file") && strstr(err, path), "%s", err);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(every_truncation_of_a_valid_file_is_refused)
{
    size_t len;
    char *buf = tu_slurp(CORRUPT_DIR "/valid_base.safetensors", &len);
    ck_assert_ptr_nonnull(buf);
    char path[] = "/tmp/innserve-trunc-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 7)) {
        ck_assert_int_eq(ftruncate(fd, 0), 0);
        ck_assert_int_eq(pwrite(fd, buf, cut, 0), (ssize_t)cut);
        char err[ENG_ERR_LEN];
        struct eng_model *m = NULL;
        ck_assert_msg(eng_model_load(path, &m, err) != ENG_OK, "accepted a file cut at %zu", cut);
        ck_assert(err[0] != '\0');
    }
    close(fd);
    unlink(path);
    free(buf);
}
END_TEST

START_TEST(flipped_bytes_never_crash)
{
    size_t len;
    char *buf = tu_slurp(CORRUPT_DIR "/valid_base.safetensors", &len);
    ck_assert_ptr_nonnull(buf);
    uint64_t s = 12345;
    for (int trial = 0; trial < 3000; trial++) {
        char *copy = malloc(len);
        memcpy(copy, buf, len);
        for (int k = 0; k < 1 + trial % 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % len;
            copy[pos] = (char)(s >> 17);
        }
        struct st_file *f = NULL;
        char err[ENG_ERR_LEN];
        if (st_open_mem((const uint8_t *)copy, len, "fuzz", &f, err) == ENG_OK) {
            /* every tensor lies inside the buffer */
            for (int i = 0; i < st_count(f); i++) {
                const struct st_tensor *t = st_at(f, i);
                ck_assert(t->data >= (const uint8_t *)copy);
                ck_assert(t->data + t->nbytes <= (const uint8_t *)copy + len);
            }
            st_close(f);
        }
        free(copy);
    }
    free(buf);
}
END_TEST

/* Mutations that keep the header JSON valid but change what the manifest says: digits
 * become other digits (dims, splits, tensor offsets, clamps), letters other letters (types,
 * field and tensor names).  Each file must load or be refused with a message; under ASan
 * nothing may read out of bounds. */
START_TEST(mutated_manifests_never_crash)
{
    size_t len;
    char *buf = tu_slurp(CORRUPT_DIR "/valid_base.safetensors", &len);
    ck_assert_ptr_nonnull(buf);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | (unsigned char)buf[i];
    ck_assert(hlen + 8 <= len);
    char path[] = "/tmp/innserve-mutate-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    uint64_t s = 777;
    int refused = 0, loaded = 0;
    for (int trial = 0; trial < 1500; trial++) {
        char *copy = malloc(len);
        memcpy(copy, buf, len);
        for (int k = 0; k < 1 + trial % 3; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = 8 + (size_t)(s >> 33) % hlen;
            char c = copy[pos];
            unsigned r = (unsigned)(s >> 20);
            if (c >= '0' && c <= '9')
                copy[pos] = (char)('0' + r % 10);
            else if (c >= 'a' && c <= 'z')
                copy[pos] = (char)('a' + r % 26);
        }
        ck_assert_int_eq(ftruncate(fd, 0), 0);
        ck_assert_int_eq(pwrite(fd, copy, len, 0), (ssize_t)len);
        char err[ENG_ERR_LEN];
        struct eng_model *m = NULL;
        if (eng_model_load(path, &m, err) == ENG_OK) {
            loaded++;
            eng_model_unref(m);
        } else {
            ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "message lacks the file: %s",
                          err);
            refused++;
        }
        free(copy);
    }
    ck_assert_int_gt(loaded, 0); /* and harmless ones (a description letter) still load */
    ck_assert_int_gt(refused, 100); /* the mutations do reach the validation */
    close(fd);
    unlink(path);
    free(buf);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("corrupt");
    TCase *tc = tcase_create("corpus");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_broken_file_is_refused_with_its_message);
    tcase_add_test(tc, duplicate_keys_are_refused);
    tcase_add_test(tc, a_fifo_is_refused_without_blocking);
    tcase_add_test(tc, every_truncation_of_a_valid_file_is_refused);
    tcase_add_test(tc, flipped_bytes_never_crash);
    tcase_add_test(tc, mutated_manifests_never_crash);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
