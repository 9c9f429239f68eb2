/*
 * worker.h
 *		The rotation worker of one database.
 */
#ifndef PCAR_WORKER_H
#define PCAR_WORKER_H

extern PGDLLEXPORT void pcar_worker_main(Datum main_arg);

/* True in a rotation worker process. */
extern bool pcar_in_rotation_worker;

#endif							/* PCAR_WORKER_H */
