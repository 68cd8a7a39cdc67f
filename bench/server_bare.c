/*
 * server_bare.c — the ceiling for the HTTP layer in `make bench-server`: libmicrohttpd
 * configured like innserve (epoll, internal thread pool, keep-alive, body read to the end
 * before answering) answering every request with a fixed body of a given size, no JSON
 * parsing, no compute.
 *
 *   server_bare BYTES HTTP_THREADS
 *
 * Logs {"event":"listening","port":P} on stderr; runs until SIGTERM/SIGINT.
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *g_body;
static size_t g_len;

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **req)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    if (!*req) {
        *req = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(g_len, g_body,
                                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

int main(int argc, char **argv)
{
    g_len = argc > 1 ? (size_t)atol(argv[1]) : 100;
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
    g_body = malloc(g_len + 1);
    memset(g_body, ' ', g_len);
    if (g_len)
        g_body[0] = '{', g_body[g_len - 1] = '}';
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL,
                                            handler, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads,
                                            MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!d)
        return 1;
    fprintf(stderr, "{\"event\":\"listening\",\"port\":%u}\n",
            MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
    int sig;
    sigwait(&s, &sig);
    MHD_stop_daemon(d);
    free(g_body);
    return 0;
}
