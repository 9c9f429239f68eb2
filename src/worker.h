/*
 * worker.h
 *		The rotation worker of one database.
 */
#ifndef PCAR_WORKER_H
#define PCAR_WORKER_H

extern PGDLLEXPORT void pcar_worker_main(Datum main_arg);

#endif							/* PCAR_WORKER_H */
