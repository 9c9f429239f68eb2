/*
 * servers.h
 *		Servers joining (add_server) and leaving (remove_server) the set that
 *		data keys are sealed to.
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

#endif							/* PCAR_SERVERS_H */
