/*
 * guc.h
 *		Every configuration parameter of the extension, defined in guc.c.
 */
#ifndef PCAR_GUC_H
#define PCAR_GUC_H

extern char *pcar_server_key_file;
extern char *pcar_server_key_command;
extern int	pcar_server_key_command_timeout;	/* seconds */
extern bool pcar_worker_enabled;
extern int	pcar_worker_naptime;		/* seconds */
extern int	pcar_rotation_batch_size;	/* rows */
extern int	pcar_rotation_delay;		/* milliseconds */
extern int	pcar_destroy_grace;		/* seconds */
extern int	pcar_max_workers;
extern int	pcar_worker_statement_timeout;	/* milliseconds */
extern int	pcar_worker_lock_timeout;	/* milliseconds */

extern void pcar_define_gucs(void);

/* Warns once (again after a change) while the log records bind parameters. */
extern void pcar_warn_if_parameters_logged(void);

#endif							/* PCAR_GUC_H */
