/*
 * pgcrypt_at_rest.h
 *		Names and checks shared by every module of the extension.
 */
#ifndef PGCRYPT_AT_REST_H
#define PGCRYPT_AT_REST_H

/* The extension is not relocatable: its objects always live here. */
#define PCAR_SCHEMA "pgcrypt_at_rest"
/* Helpers for triggers and views (from 1.3 on) */
#define PCAR_INTERNAL_SCHEMA "pgcrypt_at_rest_internal"

/* Set by _PG_init when loaded through shared_preload_libraries. */
extern bool pcar_preloaded;

/* Errors out, telling the user how to preload, when the library was loaded late. */
extern void pcar_require_preloaded(void);

#endif							/* PGCRYPT_AT_REST_H */
