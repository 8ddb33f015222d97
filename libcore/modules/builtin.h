/* builtin.h - the descriptors of the built-in modules (builtin.c). */
#ifndef XMPPD_MODULES_BUILTIN_H
#define XMPPD_MODULES_BUILTIN_H

#include "xmppd/module.h"

/* NULL-terminated, in no particular order. */
extern const struct xm_module *const xm_builtin_modules[];

extern const struct xm_module xm_mod_core;  /* always on: RFC 6121 stream features */
extern const struct xm_module xm_mod_disco;
extern const struct xm_module xm_mod_ping;
extern const struct xm_module xm_mod_privacy;   /* mod_privacy.c, with blocking */
extern const struct xm_module xm_mod_blocking;
extern const struct xm_module xm_mod_private;
extern const struct xm_module xm_mod_last;
extern const struct xm_module xm_mod_time;
extern const struct xm_module xm_mod_version;
extern const struct xm_module xm_mod_contact_info;
extern const struct xm_module xm_mod_vcard;
extern const struct xm_module xm_mod_search;
extern const struct xm_module xm_mod_legacy_auth;
extern const struct xm_module xm_mod_register;

#endif
