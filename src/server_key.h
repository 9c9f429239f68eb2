/*
 * server_key.h
 *		This server's X25519 secret, read from outside the database.
 */
#ifndef PCAR_SERVER_KEY_H
#define PCAR_SERVER_KEY_H

/* Called once by the postmaster while preloading; never raises ERROR. */
extern void pcar_server_key_load(void);

extern bool pcar_server_key_loaded(void);

/* Raise an error with a hint when no usable secret was loaded. */
extern void pcar_server_key_require(void);

/* Both valid only after pcar_server_key_require(). */
extern const uint8 *pcar_server_public_key(void);
extern const uint8 *pcar_server_secret_key(void);

#endif							/* PCAR_SERVER_KEY_H */
