/* builtin.c - the modules compiled into xmpp-sm and xmpp-c2s, by name.
 * Each is a `const struct xm_module` written against xmppd/module.h only,
 * exactly like an external NAME.so (libcore/module.c loads both kinds). */
#include "modules/builtin.h"

const struct xm_module *const xm_builtin_modules[] = {
    &xm_mod_core,
    &xm_mod_disco,
    &xm_mod_ping,
    &xm_mod_privacy,
    &xm_mod_blocking,
    &xm_mod_private,
    &xm_mod_last,
    &xm_mod_time,
    &xm_mod_version,
    &xm_mod_contact_info,
    &xm_mod_vcard,
    &xm_mod_search,
    &xm_mod_legacy_auth,
    &xm_mod_register,
    NULL
};
