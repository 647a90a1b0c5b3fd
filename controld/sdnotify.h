/*
 * The systemd notification protocol (sd_notify(3)) without libsystemd:
 * one datagram to $NOTIFY_SOCKET.  Without that variable (not started
 * by systemd with Type=notify) every call is a no-op.
 */

#ifndef CONTROLD_SDNOTIFY_H
#define CONTROLD_SDNOTIFY_H

/* keep $NOTIFY_SOCKET and take it out of the environment (first thing) */
void sdnotify_init(void);

/* send STATE ("READY=1", "STOPPING=1", ...); 0, or -1 with a warning */
int sdnotify(const char *state);

/* RELOADING=1 with the MONOTONIC_USEC systemd 253 asks for */
int sdnotify_reloading(void);

#endif /* CONTROLD_SDNOTIFY_H */
