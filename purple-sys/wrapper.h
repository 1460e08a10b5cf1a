/* Everything purple-sys binds: the libpurple umbrella header (which pulls in
 * the GLib types it uses) and wockd's va_list shim (shim.c). */
#include <purple.h>
#include "shim.h"
