/*
 * launcher.h
 *		The launcher background worker, which starts one rotation worker per
 *		database, and the hook that stops a worker before its database is
 *		dropped, renamed or copied.
 */
#ifndef PCAR_LAUNCHER_H
#define PCAR_LAUNCHER_H

/* Registers the launcher and the utility hook; called from _PG_init. */
extern void pcar_launcher_init(void);

extern PGDLLEXPORT void pcar_launcher_main(Datum main_arg);

#endif							/* PCAR_LAUNCHER_H */
