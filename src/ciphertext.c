/*
 * ciphertext.c
 *		Building, checking and opening the self-describing encrypted value.
 */
#include "postgres.h"

#include "ciphertext.h"
#include "nonce.h"
#include "sodium_provider.h"

#define NONCE_OFFSET	PCAR_HEADER_BYTES
#define BODY_OFFSET		(PCAR_HEADER_BYTES + PCAR_NONCE_BYTES)

const char *
pcar_ciphertext_problem(const uint8 *data, size_t len)
{
	if (len < 1)
		return "The value is empty.";
	if (data[0] != PCAR_VERSION_XCHACHA20POLY1305)
		return "The format version is unknown.";
	if (len < PCAR_OVERHEAD)
		return "The value is shorter than its header, nonce and tag.";
	if (pcar_ciphertext_key_id(data) == 0 ||
		pcar_ciphertext_key_id(data) > PG_INT32_MAX)
		return "The key id is out of range.";
	return NULL;
}

void
pcar_ciphertext_check(const uint8 *data, size_t len, int sqlstate)
{
	const char *problem = pcar_ciphertext_problem(data, len);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid encrypted value"),
				 errdetail_internal("%s", problem)));
}

void
pcar_ciphertext_check_size(size_t len)
{
	if (len > PCAR_MAX_VALUE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("encrypted value too long"),
				 errdetail("The value is %zu bytes; at most %zu are accepted.",
						   len, (size_t) PCAR_MAX_VALUE_BYTES)));
}

void
pcar_ciphertext_check_input(const uint8 *data, size_t len, int sqlstate)
{
	pcar_ciphertext_check_size(len);
	pcar_ciphertext_check(data, len, sqlstate);
}

/*
 * The associated data is header || context.  Without a context the header
 * inside the value is used in place, saving a copy on the per-row path.
 */
static const uint8 *
associated_data(const uint8 *header, const uint8 *context, size_t context_len,
				size_t *ad_len, uint8 **to_free)
{
	uint8	   *ad;

	*to_free = NULL;
	*ad_len = PCAR_HEADER_BYTES + context_len;
	if (context_len == 0)
		return header;

	ad = palloc(*ad_len);
	memcpy(ad, header, PCAR_HEADER_BYTES);
	memcpy(ad + PCAR_HEADER_BYTES, context, context_len);
	*to_free = ad;
	return ad;
}

void
pcar_ciphertext_seal(uint8 *out, uint32 key_id, const uint8 *key,
					 const uint8 *plaintext, size_t plaintext_len,
					 const uint8 *context, size_t context_len)
{
	const uint8 *ad;
	size_t		ad_len;
	uint8	   *to_free;

	out[0] = PCAR_VERSION_XCHACHA20POLY1305;
	out[1] = (key_id >> 24) & 0xff;
	out[2] = (key_id >> 16) & 0xff;
	out[3] = (key_id >> 8) & 0xff;
	out[4] = key_id & 0xff;
	pcar_nonce_generate(out + NONCE_OFFSET);

	ad = associated_data(out, context, context_len, &ad_len, &to_free);
	pcar_aead_encrypt(out + BODY_OFFSET, plaintext, plaintext_len,
					  ad, ad_len, out + NONCE_OFFSET, key);
	if (to_free)
		pfree(to_free);
}

bool
pcar_ciphertext_open(uint8 *plaintext, const uint8 *data, size_t len,
					 const uint8 *key, const uint8 *context, size_t context_len)
{
	const uint8 *ad;
	size_t		ad_len;
	uint8	   *to_free;
	bool		ok;

	Assert(pcar_ciphertext_problem(data, len) == NULL);

	ad = associated_data(data, context, context_len, &ad_len, &to_free);
	ok = pcar_aead_decrypt(plaintext, data + BODY_OFFSET, len - BODY_OFFSET,
						   ad, ad_len, data + NONCE_OFFSET, key);
	if (to_free)
		pfree(to_free);
	return ok;
}
