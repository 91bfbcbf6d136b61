/*
 * plugin_exec.h: finding and running an exporter plugin, gk-export-NAME
 * (gk-exporter(1), "Finding a plugin").  Internal to gokit.
 */
#ifndef GK_PLUGIN_EXEC_H
#define GK_PLUGIN_EXEC_H

/*
 * Exec gk-export-NAME with argv (argv[0] is set to that name): from
 * $GK_EXPORTER_DIR, then the install's libexec directory, then next to
 * this program (../libexec/gokit and, in the build tree, ../exporters),
 * then PATH.  A name holding '/' is refused (EINVAL).  Returns only on
 * failure, with errno set.
 */
void gk_plugin_exec(const char *name, char **argv);

#endif
