/* check_module.c - unit tests for the module runtime (module.c) and the
 * module keys of config.c: the XEP-0115 'ver' against the XEP's own
 * examples, per-host module lists, options that no module reads, unknown
 * modules, and what the built-in modules declare. */
#include "config.h"
#include "conf.h"
#include "module.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* XEP-0115 §5.2, the simple example. */
START_TEST(test_caps_simple)
{
    struct mod_identity ids[] = { { "client", "pc", NULL, "Exodus 0.9.1" } };
    char *features[] = { "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/muc",
                         "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#items" };
    char ver[32];
    ck_assert_int_eq(modules_caps_ver(ids, 1, features, 4, NULL, 0, ver), 0);
    ck_assert_str_eq(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}
END_TEST

/* XEP-0115 §5.3, the complex example: languages and an extended form. */
START_TEST(test_caps_complex)
{
    struct mod_identity ids[] = { { "client", "pc", "en", "Psi 0.11" }, { "client", "pc", "el", "\xce\xa8 0.11" } };
    char *features[] = { "http://jabber.org/protocol/muc", "http://jabber.org/protocol/disco#info",
                         "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/caps" };
    char *forms[] = {
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
        "<field var='software_version'><value>0.11</value></field>"
        "<field var='ip_version' type='text-multi'><value>ipv6</value><value>ipv4</value></field>"
        "<field var='os'><value>Mac</value></field>"
        "<field var='os_version'><value>10.5.1</value></field>"
        "<field var='software'><value>Psi</value></field>"
        "</x>"
    };
    char ver[32];
    ck_assert_int_eq(modules_caps_ver(ids, 2, features, 4, forms, 1, ver), 0);
    ck_assert_str_eq(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
}
END_TEST

static char tmpl[] = "/tmp/check_module_XXXXXX";

/* Load a configuration from text; 0 or -1 with err. */
static int load(const char *text, struct conf *c, char *err, size_t errlen)
{
    char path[64];
    snprintf(path, sizeof path, "%s", tmpl);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int rc = conf_load(path, c, err, errlen);
    unlink(path);
    return rc;
}

START_TEST(test_conf_lists)
{
    struct conf c;
    char err[512];
    const char *list[CONF_MAX_MODULES];
    ck_assert_int_eq(load("domain = a.test\n", &c, err, sizeof err), 0);
    size_t n = conf_host_modules(&c, conf_host(&c, "a.test", 6), list, CONF_MAX_MODULES);
    ck_assert_uint_gt(n, 3);
    ck_assert(conf_module_enabled(&c, conf_host(&c, "a.test", 6), "disco"));
    ck_assert(!conf_module_enabled(&c, conf_host(&c, "a.test", 6), "register")); /* off by default */
    conf_free(&c);

    ck_assert_int_eq(load("domain = a.test\ndomain = b.test\nmodules = disco ping\nmodules = version\n"
                          "ping.x = 1\n[host b.test]\nmodules_disabled = ping\n[host c.test]\nmodules = disco\n"
                          "disco.y = 2\n",
                          &c, err, sizeof err),
                     0);
    n = conf_host_modules(&c, conf_host(&c, "a.test", 6), list, CONF_MAX_MODULES);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(list[0], "disco");
    ck_assert_str_eq(list[2], "version");
    ck_assert(!conf_module_enabled(&c, conf_host(&c, "b.test", 6), "ping"));
    ck_assert(conf_module_enabled(&c, conf_host(&c, "b.test", 6), "version"));
    ck_assert(!conf_module_enabled(&c, conf_host(&c, "c.test", 6), "version"));
    ck_assert_str_eq(conf_module_opt(&c, conf_host(&c, "a.test", 6), "ping", "x")->value, "1");
    ck_assert_str_eq(conf_module_opt(&c, conf_host(&c, "c.test", 6), "disco", "y")->value, "2");
    ck_assert_ptr_null(conf_module_opt(&c, conf_host(&c, "a.test", 6), "disco", "y"));
    conf_free(&c);

    ck_assert_int_eq(load("modules = disco disco\n", &c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "listed twice"));
    ck_assert_int_eq(load("modules = Bad-Name\n", &c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, ":1:"));
    ck_assert_int_eq(load("ping.a.b = 1\n", &c, err, sizeof err), -1);
}
END_TEST

static int start(const char *text, struct conf *c, struct modules *ms, char *err, size_t errlen)
{
    struct xm_api api;
    ck_assert_int_eq(load(text, c, err, errlen), 0);
    modules_api_init(&api);
    return modules_load(ms, c, "xmpp-c2s", 0, &api, err, errlen);
}

START_TEST(test_load)
{
    struct conf c;
    struct modules ms;
    char err[512];
    ck_assert_int_eq(start("domain = a.test\ndomain = b.test\nmodules = disco ping\n[host b.test]\n"
                           "modules_disabled = ping\n",
                           &c, &ms, err, sizeof err),
                     0);
    struct mod_vhost *a = modules_vhost(&ms, "A.test", 6), *b = modules_vhost(&ms, "b.test", 6);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_null(modules_vhost(&ms, "c.test", 6));
    ck_assert(modules_has(a, "ping") && modules_has(a, "core") && !modules_has(b, "ping"));
    ck_assert_ptr_nonnull(modules_iq(a, "urn:xmpp:ping", "ping"));
    ck_assert_ptr_null(modules_iq(b, "urn:xmpp:ping", "ping"));
    /* what is declared is what is listed, and the hashes differ */
    ck_assert_ptr_nonnull(strstr(buf_cstr(&a->info), "urn:xmpp:ping"));
    ck_assert_ptr_null(strstr(buf_cstr(&b->info), "urn:xmpp:ping"));
    ck_assert_str_ne(a->caps_ver, b->caps_ver);
    ck_assert_uint_gt(strlen(a->caps_ver), 20);
    struct buf f = { 0 };
    modules_stream_features(a, 0, &f);
    ck_assert_ptr_nonnull(strstr(buf_cstr(&f), "urn:xmpp:features:rosterver"));
    ck_assert_ptr_nonnull(strstr(buf_cstr(&f), a->caps_ver));
    buf_free(&f);
    modules_unload(&ms);
    conf_free(&c);

    /* no disco, no caps */
    ck_assert_int_eq(start("modules = ping\n", &c, &ms, err, sizeof err), 0);
    ck_assert_str_eq(ms.v[0].caps_ver, "");
    modules_unload(&ms);
    conf_free(&c);

    /* an option no module reads, a module that does not exist */
    ck_assert_int_eq(start("modules = disco ping\nping.nonsense = 1\n", &c, &ms, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "has no option 'nonsense'"));
    modules_unload(&ms);
    conf_free(&c);
    ck_assert_int_eq(start("module_dir = /nonexistent\nmodules = nosuchmod\n", &c, &ms, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/nosuchmod.so"));
    modules_unload(&ms);
    conf_free(&c);
}
END_TEST

static int hook_a(xm_stanza *st, void *data) { (void)st; (void)data; return XM_PASS; }
static int hook_b(xm_stanza *st, void *data) { (void)st; (void)data; return XM_PASS; }
static int hook_c(xm_stanza *st, void *data) { (void)st; (void)data; return XM_PASS; }
static void event(xm_host *h, const char *jid, void *data) { (void)h; (void)jid; (void)data; }

/* Handlers run by sequence number, equal ones in registration order; a
 * stanza hook cannot be registered as an event hook or the reverse. */
START_TEST(test_hook_order)
{
    struct conf c;
    struct modules ms;
    char err[512];
    ck_assert_int_eq(start("modules = disco\n", &c, &ms, err, sizeof err), 0);
    xm_host *h = ms.v[0].mods[0];
    const struct xm_api *api = &ms.api;
    ck_assert_int_eq(api->add_stanza_hook(h, XM_HOOK_FILTER_PACKET, 50, hook_a, NULL), 0);
    ck_assert_int_eq(api->add_stanza_hook(h, XM_HOOK_FILTER_PACKET, 10, hook_b, NULL), 0);
    ck_assert_int_eq(api->add_stanza_hook(h, XM_HOOK_FILTER_PACKET, 50, hook_c, NULL), 0);
    const struct mod_vhost *vh = &ms.v[0];
    ck_assert_uint_eq(vh->n_hooks[XM_HOOK_FILTER_PACKET], 3);
    ck_assert(vh->hooks[XM_HOOK_FILTER_PACKET][0].stanza == hook_b);
    ck_assert(vh->hooks[XM_HOOK_FILTER_PACKET][1].stanza == hook_a);
    ck_assert(vh->hooks[XM_HOOK_FILTER_PACKET][2].stanza == hook_c);
    ck_assert_int_eq(api->add_event_hook(h, XM_HOOK_FILTER_PACKET, 1, event, NULL), -1);
    ck_assert_int_eq(api->add_stanza_hook(h, XM_HOOK_USER_REMOVED, 1, hook_a, NULL), -1);
    ck_assert_int_eq(api->add_event_hook(h, XM_HOOK_USER_REMOVED, 1, event, NULL), 0);
    /* one handler per (namespace, element) and host */
    ck_assert_int_eq(api->add_iq_handler(h, "http://jabber.org/protocol/disco#info", "query",
                                         XM_IQ_SERVER | XM_IQ_GET, NULL, NULL), -1);
    modules_unload(&ms);
    conf_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("module");
    TCase *tc = tcase_create("module");
    tcase_add_test(tc, test_caps_simple);
    tcase_add_test(tc, test_caps_complex);
    tcase_add_test(tc, test_conf_lists);
    tcase_add_test(tc, test_load);
    tcase_add_test(tc, test_hook_order);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
