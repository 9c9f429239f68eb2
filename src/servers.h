/*
 * servers.h
 *		Servers joining (add_server), leaving (remove_server) and moving to a
 *		new secret (replace_server_key) in the set data keys are sealed to.
 */
#ifndef PCAR_SERVERS_H
#define PCAR_SERVERS_H

/* Seals every live key for the new server; returns how many. */
extern int	pcar_add_server(const char *name, const bytea *public_key);

/*
 * Deletes the server's copies and gives each keyring whose active key it
 * could open a new one; returns how many live keys it held a copy of.
 */
extern int	pcar_remove_server(const char *name);

/*
 * A server moving to a new secret: every live key sealed for the new public
 * key as well; returns how many.  complete_...() deletes the old copies once
 * it runs with the new secret.
 */
extern int	pcar_replace_server_key(const char *name, const bytea *new_public_key);
extern void pcar_complete_server_key_replacement(const char *name);

/* Warns when this server holds no copy of some live keys (the worker, hourly). */
extern void pcar_log_missing_copies(void);

#endif							/* PCAR_SERVERS_H */
