/* wockd's C shim for the libpurple ui-ops Rust cannot implement itself: the
 * request ui-ops that take a `va_list`. Stable Rust can neither define a
 * function receiving a va_list nor walk one portably, so these C functions do
 * the walking and hand Rust plain arrays through the callbacks registered with
 * wockd_shim_set_request_callbacks(). */
#ifndef WOCKD_PURPLE_SHIM_H
#define WOCKD_PURPLE_SHIM_H

#include <stdarg.h>
#include <purple.h>

/* `labels` and `callbacks` hold `count` entries; both arrays are freed when the
 * callback returns (the strings belong to the caller of purple_request_action). */
typedef void *(*WockdRequestActionFn)(const char *title, const char *primary, const char *secondary,
                                      int default_action, PurpleAccount *account, const char *who,
                                      PurpleConversation *conv, void *user_data, size_t count,
                                      const char *const *labels, const GCallback *callbacks);

/* `labels` and `values` hold `count` entries, as above. */
typedef void *(*WockdRequestChoiceFn)(const char *title, const char *primary, const char *secondary,
                                      int default_value, const char *ok_text, GCallback ok_cb,
                                      const char *cancel_text, GCallback cancel_cb,
                                      PurpleAccount *account, const char *who, PurpleConversation *conv,
                                      void *user_data, size_t count, const char *const *labels,
                                      const int *values);

void wockd_shim_set_request_callbacks(WockdRequestActionFn action, WockdRequestChoiceFn choice);

/* Exactly the PurpleRequestUiOps signatures; put these in the ui-ops struct. */
void *wockd_shim_request_action(const char *title, const char *primary, const char *secondary,
                                int default_action, PurpleAccount *account, const char *who,
                                PurpleConversation *conv, void *user_data, size_t action_count,
                                va_list actions);
void *wockd_shim_request_choice(const char *title, const char *primary, const char *secondary,
                                int default_value, const char *ok_text, GCallback ok_cb,
                                const char *cancel_text, GCallback cancel_cb, PurpleAccount *account,
                                const char *who, PurpleConversation *conv, void *user_data,
                                va_list choices);

#endif
