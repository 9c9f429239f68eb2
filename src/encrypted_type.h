/*
 * encrypted_type.h
 *		The SQL type "encrypted": a varlena holding one ciphertext.
 */
#ifndef PCAR_ENCRYPTED_TYPE_H
#define PCAR_ENCRYPTED_TYPE_H

#include "fmgr.h"

/* The text form is this prefix followed by the value in standard base64. */
#define PCAR_TEXT_PREFIX	"enc:"

/* Same representation as bytea; a separate name keeps call sites honest. */
typedef bytea Encrypted;

/* Packed: short inline values are read in place, not copied. */
#define DatumGetEncryptedP(X)		((Encrypted *) PG_DETOAST_DATUM_PACKED(X))
#define PG_GETARG_ENCRYPTED_P(n)	DatumGetEncryptedP(PG_GETARG_DATUM(n))
#define PG_RETURN_ENCRYPTED_P(x)	PG_RETURN_POINTER(x)

#define ENCRYPTED_DATA(e)	((const uint8 *) VARDATA_ANY(e))
#define ENCRYPTED_LEN(e)	((size_t) VARSIZE_ANY_EXHDR(e))

/* OID of the type in this database, or InvalidOid without the extension. */
extern Oid	pcar_encrypted_type_oid(void);

#endif							/* PCAR_ENCRYPTED_TYPE_H */
