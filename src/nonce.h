/*
 * nonce.h
 *		Per-process buffered generator of random 24-byte nonces.
 */
#ifndef PCAR_NONCE_H
#define PCAR_NONCE_H

extern void pcar_nonce_generate(uint8 *nonce);

#endif							/* PCAR_NONCE_H */
