/* Everything purple-sys binds: the libpurple umbrella header (which pulls in
 * the GLib types it uses). */
#include <purple.h>
