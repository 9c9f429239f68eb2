/*
 * sql_functions.h
 *		SQL-callable functions other than the type's I/O: encrypt, decrypt,
 *		keyring management and the key tables' triggers.  Declared by
 *		PG_FUNCTION_INFO_V1 in sql_functions.c; this header exists so the
 *		module list in the Makefile maps one-to-one onto headers.
 */
#ifndef PCAR_SQL_FUNCTIONS_H
#define PCAR_SQL_FUNCTIONS_H

#endif							/* PCAR_SQL_FUNCTIONS_H */
