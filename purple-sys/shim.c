/* See shim.h. Runs on libpurple's (main) thread only, like every ui-op. */
#include "shim.h"

static WockdRequestActionFn action_fn;
static WockdRequestChoiceFn choice_fn;

void wockd_shim_set_request_callbacks(WockdRequestActionFn action, WockdRequestChoiceFn choice)
{
	action_fn = action;
	choice_fn = choice;
}

void *wockd_shim_request_action(const char *title, const char *primary, const char *secondary,
                                int default_action, PurpleAccount *account, const char *who,
                                PurpleConversation *conv, void *user_data, size_t action_count,
                                va_list actions)
{
	const char **labels;
	GCallback *cbs;
	void *handle;
	size_t i;

	if (action_fn == NULL)
		return NULL;
	labels = g_new0(const char *, action_count + 1);
	cbs = g_new0(GCallback, action_count + 1);
	/* request.h: the actions are (const char *label, PurpleRequestActionCb cb) pairs. */
	for (i = 0; i < action_count; i++) {
		labels[i] = va_arg(actions, const char *);
		cbs[i] = va_arg(actions, GCallback);
	}
	handle = action_fn(title, primary, secondary, default_action, account, who, conv, user_data,
	                   action_count, labels, cbs);
	g_free(labels);
	g_free(cbs);
	return handle;
}

void *wockd_shim_request_choice(const char *title, const char *primary, const char *secondary,
                                int default_value, const char *ok_text, GCallback ok_cb,
                                const char *cancel_text, GCallback cancel_cb, PurpleAccount *account,
                                const char *who, PurpleConversation *conv, void *user_data,
                                va_list choices)
{
	GPtrArray *labels;
	GArray *values;
	const char *label;
	void *handle;

	if (choice_fn == NULL)
		return NULL;
	labels = g_ptr_array_new();
	values = g_array_new(FALSE, FALSE, sizeof(int));
	/* request.h: NULL-terminated (const char *label, int value) pairs. */
	while ((label = va_arg(choices, const char *)) != NULL) {
		int value = va_arg(choices, int);
		g_ptr_array_add(labels, (gpointer)label);
		g_array_append_val(values, value);
	}
	handle = choice_fn(title, primary, secondary, default_value, ok_text, ok_cb, cancel_text, cancel_cb,
	                   account, who, conv, user_data, labels->len,
	                   (const char *const *)labels->pdata, (const int *)values->data);
	g_ptr_array_free(labels, TRUE);
	g_array_free(values, TRUE);
	return handle;
}
