/* MQTT over TLS: mbedTLS over the non-blocking socket, through BIO callbacks. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "net/tls.h"

/* ---- A listener's TLS settings --------------------------------------------- */

typedef struct tls_psk {
	char *identity;
	size_t id_len;
	unsigned char key[64];
	size_t key_len;
} tls_psk;

typedef struct tls_sni {
	char host[256];
	mbedtls_x509_crt chain;
	mbedtls_pk_context key;
} tls_sni;

#define ALPN_MAX 8

struct mqbi_tls_server {
	_Atomic unsigned refs;
	mqb_broker *broker;
	mqbi_listener_cfg cfg; /* kept to reload the same files */
	mbedtls_ssl_config conf;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg; /* locks itself: shared by the workers */
	mbedtls_x509_crt chain, ca;
	mbedtls_pk_context key;
	mbedtls_ssl_ticket_context tickets;
	mbedtls_ssl_cache_context cache;
	int *ciphersuites; /* 0-terminated, or NULL for mbedTLS's list */
	const char *alpn[ALPN_MAX + 1];
	char alpn_text[MQBI_CFG_PATH];
	tls_psk *psks;
	size_t npsks;
	tls_sni *snis;
	size_t nsnis;
};

static void tls_error_text(int rc, char *buf, size_t n)
{
	mbedtls_strerror(rc, buf, n);
	if (!buf[0])
		snprintf(buf, n, "mbedTLS error -0x%04x", (unsigned)-rc);
}

/* Logs a setup error about the listener and returns MQB_ERR_INVAL. */
static mqb_err setup_error(mqbi_tls_server *s, const char *what, const char *path, int rc)
{
	char why[160] = "";
	if (rc)
		tls_error_text(rc, why, sizeof why);
	mqbi_log(s->broker, MQB_LOG_ERROR, "tls", NULL, "listener %s.%s: %s%s%s%s%s", s->cfg.type,
	         s->cfg.name, what, path ? " " : "", path ? path : "", rc ? ": " : "", why);
	return MQB_ERR_INVAL;
}

/* Splits text at any of `seps` into trimmed, non-empty items (in place). */
static size_t split_list(char *text, const char *seps, char **out, size_t max)
{
	size_t n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(text, seps, &save); tok && n < max;
	     tok = strtok_r(NULL, seps, &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		char *end = tok + strlen(tok);
		while (end > tok && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*tok)
			out[n++] = tok;
	}
	return n;
}

static mqb_err load_versions(mqbi_tls_server *s)
{
	char text[sizeof s->cfg.tls_versions];
	char *v[8];
	snprintf(text, sizeof text, "%s", s->cfg.tls_versions);
	size_t n = split_list(text, ",", v, 8);
	int lo = 99, hi = -1;
	bool want13 = false;
	for (size_t i = 0; i < n; i++) {
		int minor;
		if (strcasecmp(v[i], "tlsv1.3") == 0) {
			want13 = true;
			continue;
		} else if (strcasecmp(v[i], "tlsv1.2") == 0) {
			minor = MBEDTLS_SSL_MINOR_VERSION_3;
		} else if (strcasecmp(v[i], "tlsv1.1") == 0) {
			minor = MBEDTLS_SSL_MINOR_VERSION_2;
		} else if (strcasecmp(v[i], "tlsv1") == 0 || strcasecmp(v[i], "tlsv1.0") == 0) {
			minor = MBEDTLS_SSL_MINOR_VERSION_1;
		} else {
			char what[128];
			snprintf(what, sizeof what,
			         "tls_versions: unknown version '%s' (tlsv1.2, tlsv1.1, tlsv1)",
			         v[i]);
			return setup_error(s, what, NULL, 0);
		}
		lo = minor < lo ? minor : lo;
		hi = minor > hi ? minor : hi;
	}
	if (hi < 0)
		return setup_error(s,
		                   want13 ? "tls_versions: TLS 1.3 needs mbedTLS 3; this build "
		                            "(2.28) offers tlsv1.2 at most"
		                          : "tls_versions: no version given",
		                   NULL, 0);
	if (want13)
		mqbi_log(s->broker, MQB_LOG_WARNING, "tls", NULL,
		         "listener %s.%s: TLS 1.3 needs mbedTLS 3; offering up to TLS 1.2",
		         s->cfg.type, s->cfg.name);
	mbedtls_ssl_conf_min_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, lo);
	mbedtls_ssl_conf_max_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, hi);
	return MQB_OK;
}

/* IANA (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) or mbedTLS names. */
static mqb_err load_ciphers(mqbi_tls_server *s)
{
	if (!s->cfg.ciphers[0])
		return MQB_OK; /* mbedTLS's order: ChaCha20-Poly1305 first, its fastest AEAD
		                * (its AES-GCM works a block at a time) */
	char text[sizeof s->cfg.ciphers];
	char *v[128];
	snprintf(text, sizeof text, "%s", s->cfg.ciphers);
	size_t n = split_list(text, ",:", v, 128);
	s->ciphersuites = mqbi_calloc(&s->broker->alloc, (n + 1) * sizeof(int));
	if (!s->ciphersuites)
		return MQB_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		for (char *p = v[i]; *p; p++)
			*p = *p == '_' ? '-' : (char)toupper((unsigned char)*p);
		int id = mbedtls_ssl_get_ciphersuite_id(v[i]);
		if (!id) {
			char what[200];
			snprintf(what, sizeof what,
			         "ciphers: unknown cipher suite '%s' (use IANA names such as "
			         "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)",
			         v[i]);
			return setup_error(s, what, NULL, 0);
		}
		s->ciphersuites[i] = id;
	}
	mbedtls_ssl_conf_ciphersuites(&s->conf, s->ciphersuites);
	return MQB_OK;
}

static mqb_err load_alpn(mqbi_tls_server *s)
{
	if (!s->cfg.alpn[0])
		return MQB_OK;
	snprintf(s->alpn_text, sizeof s->alpn_text, "%s", s->cfg.alpn);
	size_t n = split_list(s->alpn_text, ",", (char **)s->alpn, ALPN_MAX);
	s->alpn[n] = NULL;
	int rc = mbedtls_ssl_conf_alpn_protocols(&s->conf, s->alpn);
	return rc ? setup_error(s, "alpn:", s->cfg.alpn, rc) : MQB_OK;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int psk_lookup(void *arg, mbedtls_ssl_context *ssl, const unsigned char *id, size_t len)
{
	mqbi_tls_server *s = arg;
	for (size_t i = 0; i < s->npsks; i++)
		if (s->psks[i].id_len == len && memcmp(s->psks[i].identity, id, len) == 0)
			return mbedtls_ssl_set_hs_psk(ssl, s->psks[i].key, s->psks[i].key_len);
	return -1; /* unknown identity: the handshake fails */
}

/* "identity:hexkey" per line; '#' starts a comment. */
static mqb_err load_psks(mqbi_tls_server *s)
{
	const char *path = s->cfg.psk_file;
	if (!path[0])
		return MQB_OK;
	FILE *f = fopen(path, "r");
	if (!f) {
		char what[400];
		snprintf(what, sizeof what, "psk_file: cannot open %s: %s", path, strerror(errno));
		return setup_error(s, what, NULL, 0);
	}
	char line[1024];
	int lineno = 0;
	mqb_err err = MQB_OK;
	while (!err && fgets(line, sizeof line, f)) {
		lineno++;
		char *p = line;
		while (isspace((unsigned char)*p))
			p++;
		p[strcspn(p, "\r\n")] = '\0';
		if (!*p || *p == '#')
			continue;
		char *colon = strrchr(p, ':');
		size_t hexlen = colon ? strlen(colon + 1) : 0;
		tls_psk k = {0};
		bool ok = colon && colon > p && hexlen && hexlen % 2 == 0 &&
		          hexlen / 2 <= sizeof k.key;
		for (size_t i = 0; ok && i < hexlen / 2; i++) {
			int hi = hexval((unsigned char)colon[1 + 2 * i]);
			int lo = hexval((unsigned char)colon[2 + 2 * i]);
			ok = hi >= 0 && lo >= 0;
			k.key[i] = (unsigned char)(hi << 4 | lo);
		}
		if (!ok) {
			char what[400];
			snprintf(what, sizeof what,
			         "psk_file %s line %d: expected identity:hexkey (an even number of "
			         "hex digits, at most 128)",
			         path, lineno);
			err = setup_error(s, what, NULL, 0);
			break;
		}
		k.key_len = hexlen / 2;
		k.id_len = (size_t)(colon - p);
		k.identity = mqbi_strndup(&s->broker->alloc, p, k.id_len);
		tls_psk *v = mqbi_realloc(&s->broker->alloc, s->psks, (s->npsks + 1) * sizeof *v);
		if (!k.identity || !v) {
			mqbi_free(&s->broker->alloc, k.identity);
			if (v)
				s->psks = v;
			err = MQB_ERR_NOMEM;
			break;
		}
		s->psks = v;
		s->psks[s->npsks++] = k;
	}
	fclose(f);
	if (!err && s->npsks == 0)
		err = setup_error(s, "psk_file has no keys:", path, 0);
	if (!err)
		mbedtls_ssl_conf_psk_cb(&s->conf, psk_lookup, s);
	return err;
}

static mqb_err load_pair(mqbi_tls_server *s, const char *certfile, const char *keyfile,
                         mbedtls_x509_crt *chain, mbedtls_pk_context *key)
{
	int rc = mbedtls_x509_crt_parse_file(chain, certfile);
	if (rc)
		return setup_error(s, "cannot load the certificate chain", certfile, rc);
	const char *pw = s->cfg.key_password[0] ? s->cfg.key_password : NULL;
	rc = mbedtls_pk_parse_keyfile(key, keyfile, pw);
	if (rc == MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE)
		return setup_error(s,
		                   "the key's encryption is not supported (use PEM encryption, "
		                   "e.g. openssl ec -aes256, or PKCS#8 with 3DES):",
		                   keyfile, 0);
	if (rc)
		return setup_error(s,
		                   rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED
		                           ? "key is encrypted and key_password is not set:"
		                           : "cannot load the private key",
		                   keyfile, rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED ? 0 : rc);
	rc = mbedtls_pk_check_pair(&chain->pk, key);
	if (rc)
		return setup_error(s, "the key does not match the certificate", certfile, rc);
	return MQB_OK;
}

static int sni_select(void *arg, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
	mqbi_tls_server *s = arg;
	for (size_t i = 0; i < s->nsnis; i++)
		if (strlen(s->snis[i].host) == len &&
		    strncasecmp(s->snis[i].host, (const char *)name, len) == 0)
			return mbedtls_ssl_set_hs_own_cert(ssl, &s->snis[i].chain, &s->snis[i].key);
	return 0; /* another name: the listener's certificate */
}

/* "host=certfile,keyfile; host2=certfile2,keyfile2" */
static mqb_err load_snis(mqbi_tls_server *s)
{
	if (!s->cfg.sni_certs[0])
		return MQB_OK;
	char text[sizeof s->cfg.sni_certs];
	char *v[32];
	snprintf(text, sizeof text, "%s", s->cfg.sni_certs);
	size_t n = split_list(text, ";", v, 32);
	s->snis = mqbi_calloc(&s->broker->alloc, (n ? n : 1) * sizeof *s->snis);
	if (!s->snis)
		return MQB_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		tls_sni *e = &s->snis[s->nsnis++];
		mbedtls_x509_crt_init(&e->chain);
		mbedtls_pk_init(&e->key);
		char *eq = strchr(v[i], '='), *comma = eq ? strchr(eq, ',') : NULL;
		if (!eq || !comma || eq == v[i] || (size_t)(eq - v[i]) >= sizeof e->host) {
			char what[MQBI_CFG_LIST + 64];
			snprintf(what, sizeof what, "sni_certs: '%s' is not host=certfile,keyfile",
			         v[i]);
			return setup_error(s, what, NULL, 0);
		}
		*eq = *comma = '\0';
		snprintf(e->host, sizeof e->host, "%s", v[i]);
		for (char *t = e->host + strlen(e->host);
		     t > e->host && isspace((unsigned char)t[-1]);)
			*--t = '\0';
		char *cert = eq + 1, *key = comma + 1;
		while (isspace((unsigned char)*cert))
			cert++;
		while (isspace((unsigned char)*key))
			key++;
		mqb_err err = load_pair(s, cert, key, &e->chain, &e->key);
		if (err)
			return err;
	}
	mbedtls_ssl_conf_sni(&s->conf, sni_select, s);
	return MQB_OK;
}

static mqb_err load_cas(mqbi_tls_server *s)
{
	bool have = false;
	if (s->cfg.cacertfile[0]) {
		int rc = mbedtls_x509_crt_parse_file(&s->ca, s->cfg.cacertfile);
		if (rc)
			return setup_error(s, "cannot load cacertfile", s->cfg.cacertfile,
			                   rc > 0 ? 0 : rc);
		have = true;
	}
	if (s->cfg.cacertdir[0]) {
		int rc = mbedtls_x509_crt_parse_path(&s->ca, s->cfg.cacertdir);
		if (rc < 0)
			return setup_error(s, "cannot read cacertdir", s->cfg.cacertdir, rc);
		if (rc > 0)
			mqbi_log(s->broker, MQB_LOG_WARNING, "tls", NULL,
			         "listener %s.%s: %d files of cacertdir %s are not certificates",
			         s->cfg.type, s->cfg.name, rc, s->cfg.cacertdir);
		have = true;
	}
	if (s->cfg.verify == MQBI_VERIFY_PEER) {
		if (!have)
			return setup_error(s, "verify = verify_peer needs cacertfile or cacertdir",
			                   NULL, 0);
		mbedtls_ssl_conf_ca_chain(&s->conf, &s->ca, NULL);
		/* Optional, so that a certificate that does not verify can be
		 * reported precisely (and refused) after the handshake. */
		mbedtls_ssl_conf_authmode(&s->conf, s->cfg.fail_if_no_peer_cert
		                                            ? MBEDTLS_SSL_VERIFY_REQUIRED
		                                            : MBEDTLS_SSL_VERIFY_OPTIONAL);
	} else {
		mbedtls_ssl_conf_authmode(&s->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	return MQB_OK;
}

static void server_free(mqbi_tls_server *s)
{
	const mqb_allocator *a = &s->broker->alloc;
	mbedtls_ssl_config_free(&s->conf);
	mbedtls_ssl_ticket_free(&s->tickets);
	mbedtls_ssl_cache_free(&s->cache);
	mbedtls_x509_crt_free(&s->chain);
	mbedtls_x509_crt_free(&s->ca);
	mbedtls_pk_free(&s->key);
	for (size_t i = 0; i < s->nsnis; i++) {
		mbedtls_x509_crt_free(&s->snis[i].chain);
		mbedtls_pk_free(&s->snis[i].key);
	}
	mqbi_free(a, s->snis);
	for (size_t i = 0; i < s->npsks; i++) {
		mbedtls_platform_zeroize(s->psks[i].key, sizeof s->psks[i].key);
		mqbi_free(a, s->psks[i].identity);
	}
	mqbi_free(a, s->psks);
	mqbi_free(a, s->ciphersuites);
	mbedtls_ctr_drbg_free(&s->drbg);
	mbedtls_entropy_free(&s->entropy);
	mbedtls_platform_zeroize(s->cfg.key_password, sizeof s->cfg.key_password);
	mqbi_free(a, s);
}

mqb_err mqbi_tls_server_create(mqb_broker *b, const mqbi_listener_cfg *cfg, mqbi_tls_server **out)
{
	mqbi_tls_server *s = mqbi_calloc(&b->alloc, sizeof *s);
	if (!s)
		return MQB_ERR_NOMEM;
	atomic_init(&s->refs, 1);
	s->broker = b;
	s->cfg = *cfg;
	mbedtls_ssl_config_init(&s->conf);
	mbedtls_entropy_init(&s->entropy);
	mbedtls_ctr_drbg_init(&s->drbg);
	mbedtls_x509_crt_init(&s->chain);
	mbedtls_x509_crt_init(&s->ca);
	mbedtls_pk_init(&s->key);
	mbedtls_ssl_ticket_init(&s->tickets);
	mbedtls_ssl_cache_init(&s->cache);

	mqb_err err = MQB_OK;
	static const char pers[] = "libmqttbroker tls";
	int rc = mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy,
	                               (const unsigned char *)pers, sizeof pers - 1);
	if (rc)
		err = setup_error(s, "cannot seed the random generator", NULL, rc);
	if (!err && (rc = mbedtls_ssl_config_defaults(&s->conf, MBEDTLS_SSL_IS_SERVER,
	                                              MBEDTLS_SSL_TRANSPORT_STREAM,
	                                              MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
		err = setup_error(s, "cannot set up TLS", NULL, rc);
	if (!err) {
		mbedtls_ssl_conf_rng(&s->conf, mbedtls_ctr_drbg_random, &s->drbg);
		if (!cfg->certfile[0] && !cfg->psk_file[0])
			err = setup_error(s, "certfile and keyfile (or psk_file) are required",
			                  NULL, 0);
		else if (cfg->certfile[0] && !cfg->keyfile[0])
			err = setup_error(s, "certfile is set but keyfile is not", NULL, 0);
	}
	if (!err && cfg->certfile[0]) {
		err = load_pair(s, cfg->certfile, cfg->keyfile, &s->chain, &s->key);
		if (!err && (rc = mbedtls_ssl_conf_own_cert(&s->conf, &s->chain, &s->key)) != 0)
			err = setup_error(s, "cannot use the certificate", cfg->certfile, rc);
	}
	if (!err) {
		/* Server preference decides the ECDHE curve: P-256 first, whose
		 * arithmetic mbedTLS optimises (fast reduction, precomputed tables),
		 * ahead of X25519 that clients usually list first. */
		static const mbedtls_ecp_group_id curves[] = {
		        MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_CURVE25519,
		        MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1, MBEDTLS_ECP_DP_NONE};
		mbedtls_ssl_conf_curves(&s->conf, curves);
		err = load_versions(s);
	}
	if (!err)
		err = load_ciphers(s);
	if (!err)
		err = load_alpn(s);
	if (!err)
		err = load_cas(s);
	if (!err)
		err = load_psks(s);
	if (!err)
		err = load_snis(s);
	if (!err && cfg->reuse_sessions) {
		rc = mbedtls_ssl_ticket_setup(&s->tickets, mbedtls_ctr_drbg_random, &s->drbg,
		                              MBEDTLS_CIPHER_AES_256_GCM, 86400);
		if (rc)
			err = setup_error(s, "cannot set up session tickets", NULL, rc);
		else
			mbedtls_ssl_conf_session_tickets_cb(&s->conf, mbedtls_ssl_ticket_write,
			                                    mbedtls_ssl_ticket_parse, &s->tickets);
		mbedtls_ssl_conf_session_cache(&s->conf, &s->cache, mbedtls_ssl_cache_get,
		                               mbedtls_ssl_cache_set);
	} else if (!err) {
		mbedtls_ssl_conf_session_tickets(&s->conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
	}
	if (err) {
		server_free(s);
		return err;
	}
	*out = s;
	return MQB_OK;
}

static mqbi_tls_server *server_ref(mqbi_tls_server *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void mqbi_tls_server_release(mqbi_tls_server *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1)
		server_free(s);
}

/* Runs on the listener's worker, the only thread that reads ls->tls. */
static void swap_server(mqbi_worker *w, void *arg)
{
	mqbi_listener *ls = ((void **)arg)[0];
	mqbi_tls_server *fresh = ((void **)arg)[1];
	mqbi_tls_server *old = ls->tls;
	ls->tls = fresh;
	mqbi_tls_server_release(old);
}

void mqbi_tls_reload(mqb_broker *b)
{
	pthread_mutex_lock(&b->state_lock);
	unsigned n = b->nlisteners;
	mqbi_listener **v = mqbi_malloc(&b->alloc, sizeof(*v) * (n ? n : 1));
	if (v)
		memcpy(v, b->listeners, sizeof(*v) * n);
	pthread_mutex_unlock(&b->state_lock);
	if (!v)
		return;
	/* Listeners are only ever added to the array, and freed at destroy. */
	for (unsigned i = 0; i < n; i++) {
		mqbi_listener *ls = v[i];
		if (ls->removed || !ls->tls || atomic_load(&ls->fd) < 0)
			continue;
		mqbi_tls_server *fresh;
		if (mqbi_tls_server_create(b, &ls->tls->cfg, &fresh) != MQB_OK) {
			mqbi_log(b, MQB_LOG_ERROR, "tls", NULL,
			         "listener %s.%s: certificates not reloaded; keeping the current "
			         "ones",
			         ls->cfg.type, ls->cfg.name);
			continue;
		}
		void *arg[2] = {ls, fresh};
		mqbi_worker_call(ls->w, swap_server, arg);
		mqbi_log(b, MQB_LOG_NOTICE, "tls", NULL, "listener %s.%s: certificates reloaded",
		         ls->cfg.type, ls->cfg.name);
	}
	mqbi_free(&b->alloc, v);
}

/* ---- A connection ----------------------------------------------------------- */

typedef struct tls_conn {
	mqbi_transport base;  /* base.c: the client */
	mqbi_tls_server *srv; /* holds a reference */
	mbedtls_ssl_context ssl;
	/* Socket bytes read ahead of what mbedTLS asked for: one recv brings
	 * several records instead of two recv calls per record. A pooled buffer,
	 * held only while it has bytes. */
	uint8_t *ra;
	uint32_t ra_cap, ra_off, ra_len;
	uint32_t out_retry; /* length of a write mbedTLS must be called again with */
	bool drained;       /* the socket gave less than asked: it has nothing more now */
	bool done;          /* handshake finished */
} tls_conn;

static const mqbi_transport_ops tls_ops;

/* The TLS layer of a client's transport stack, or NULL. */
static tls_conn *conn_of(const mqbi_client *c)
{
	for (mqbi_transport *t = c->xport; t; t = t->lower)
		if (t->ops == &tls_ops)
			return (tls_conn *)t;
	return NULL;
}

static void ra_release(tls_conn *t)
{
	if (t->ra) {
		mqbi_iobuf_put(t->base.c->w, t->ra, t->ra_cap);
		t->ra = NULL;
		t->ra_cap = t->ra_off = t->ra_len = 0;
	}
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	tls_conn *t = ctx;
	if (t->ra_off == t->ra_len) {
		/* A short read emptied the socket: asking again would only cost a
		 * system call that says EAGAIN (readiness is level-triggered). */
		if (t->drained)
			return MBEDTLS_ERR_SSL_WANT_READ;
		if (!t->ra && !(t->ra = mqbi_iobuf_get(t->base.c->w, MQBI_IOBUF_LARGE, &t->ra_cap)))
			return MBEDTLS_ERR_SSL_ALLOC_FAILED;
		ssize_t n = recv(t->base.c->fd, t->ra, t->ra_cap, 0);
		if (n <= 0) {
			ra_release(t);
			if (n == 0)
				return 0; /* end of stream */
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return MBEDTLS_ERR_SSL_WANT_READ;
			return MBEDTLS_ERR_NET_RECV_FAILED;
		}
		t->ra_off = 0;
		t->ra_len = (uint32_t)n;
		t->drained = (uint32_t)n < t->ra_cap;
	}
	size_t n = t->ra_len - t->ra_off < len ? t->ra_len - t->ra_off : len;
	memcpy(buf, t->ra + t->ra_off, n);
	t->ra_off += (uint32_t)n;
	if (t->ra_off == t->ra_len)
		ra_release(t);
	return (int)n;
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	tls_conn *t = ctx;
	ssize_t n = send(t->base.c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	return MBEDTLS_ERR_NET_SEND_FAILED;
}

static ssize_t tls_recv(mqbi_transport *base, uint8_t *buf, size_t len)
{
	tls_conn *t = (tls_conn *)base;
	mqbi_client *c = base->c;
	size_t got = 0;
	t->drained = false;
	while (got < len) {
		int rc = mbedtls_ssl_read(&t->ssl, buf + got, len - got);
		if (rc > 0) {
			got += (size_t)rc;
			continue;
		}
		if (got)
			break; /* report the error with the next call */
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
			errno = EAGAIN;
			return -1;
		}
		if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
			return 0;
		char why[120];
		tls_error_text(rc, why, sizeof why);
		mqbi_log(c->w->broker, MQB_LOG_DEBUG, "tls", c, "read: %s", why);
		errno = rc == MBEDTLS_ERR_NET_RECV_FAILED ? ECONNRESET : EPROTO;
		return -1;
	}
	return (ssize_t)got;
}

static ssize_t tls_send(mqbi_transport *base, const uint8_t *buf, size_t len)
{
	tls_conn *t = (tls_conn *)base;
	size_t done = 0;
	while (done < len) {
		/* A record that mbedTLS could not write in full is finished by a
		 * call with the same bytes; the caller starts with them again. */
		size_t n = t->out_retry ? t->out_retry : len - done;
		if (n > MBEDTLS_SSL_OUT_CONTENT_LEN)
			n = MBEDTLS_SSL_OUT_CONTENT_LEN;
		int rc = mbedtls_ssl_write(&t->ssl, buf + done, n);
		if (rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == MBEDTLS_ERR_SSL_WANT_READ) {
			t->out_retry = (uint32_t)n;
			break;
		}
		if (rc < 0) {
			if (done)
				break;
			errno = EPIPE;
			return -1;
		}
		t->out_retry = 0;
		done += (size_t)rc;
	}
	if (!done) {
		errno = EAGAIN;
		return -1;
	}
	return (ssize_t)done;
}

static bool tls_buffered(const mqbi_transport *base)
{
	const tls_conn *t = (const tls_conn *)base;
	return t->ra_off < t->ra_len || mbedtls_ssl_get_bytes_avail(&t->ssl) > 0;
}

static void tls_close(mqbi_transport *base)
{
	tls_conn *t = (tls_conn *)base;
	if (t->done)
		(void)mbedtls_ssl_close_notify(&t->ssl); /* best effort */
	ra_release(t);
	mbedtls_ssl_free(&t->ssl);
	mqbi_tls_server_release(t->srv);
	mqbi_free(&base->c->w->broker->alloc, t);
}

static const mqbi_transport_ops tls_ops = {
        .recv = tls_recv, .send = tls_send, .buffered = tls_buffered, .close = tls_close};

static void handshake_failed(mqbi_client *c, const char *why)
{
	mqbi_worker *w = c->w;
	MQBI_COUNT(w->m.tls_handshake_errors, 1);
	mqbi_log(w->broker, MQB_LOG_NOTICE, "tls", c, "TLS handshake failed on listener %s: %s",
	         c->listener->cfg.name, why);
	mqbi_client_close(c, MQBI_RC_UNSPECIFIED);
}

static void handshake_timeout(mqbi_loop *l, mqbi_timer *tm)
{
	mqbi_client *c = (mqbi_client *)((char *)tm - offsetof(mqbi_client, timer));
	handshake_failed(c, "timed out");
}

static void on_handshake_io(mqbi_loop *l, int fd, void *user, unsigned events)
{
	mqbi_client *c = user;
	tls_conn *t = conn_of(c);
	t->drained = false; /* a new readiness event */
	int rc = mbedtls_ssl_handshake(&t->ssl);
	if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
		unsigned ev = rc == MBEDTLS_ERR_SSL_WANT_READ ? MQBI_EV_READ : MQBI_EV_WRITE;
		if (mqbi_loop_watch(l, fd, ev, on_handshake_io, c) != MQB_OK)
			handshake_failed(c, "cannot watch the socket");
		/* Bytes read ahead are not signalled by the socket. */
		else if (ev == MQBI_EV_READ && t->ra_off < t->ra_len)
			on_handshake_io(l, fd, c, MQBI_EV_READ);
		return;
	}
	if (rc != 0) {
		char why[160];
		if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
			char info[200];
			mbedtls_x509_crt_verify_info(info, sizeof info, "",
			                             mbedtls_ssl_get_verify_result(&t->ssl));
			info[strcspn(info, "\n")] = '\0';
			snprintf(why, sizeof why, "client certificate refused: %.120s", info);
		} else if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE ||
		           rc == MBEDTLS_ERR_SSL_CONN_EOF || rc == MBEDTLS_ERR_NET_CONN_RESET) {
			snprintf(why, sizeof why, "%s",
			         rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE
			                 ? "the client sent a fatal alert (it does not trust us?)"
			                 : "the client closed the connection");
		} else {
			tls_error_text(rc, why, sizeof why);
		}
		handshake_failed(c, why);
		return;
	}
	/* With verify_peer the handshake accepts any certificate (mode
	 * optional), so that a bad one is refused here, with its reason. */
	uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
	if (t->srv->cfg.verify == MQBI_VERIFY_PEER && mbedtls_ssl_get_peer_cert(&t->ssl) &&
	    flags != 0) {
		char info[200], why[240];
		mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
		info[strcspn(info, "\n")] = '\0';
		snprintf(why, sizeof why, "client certificate refused: %.120s", info);
		handshake_failed(c, why);
		return;
	}
	t->done = true;
	MQBI_COUNT(c->w->m.tls_handshakes, 1);
	mqbi_log(c->w->broker, MQB_LOG_DEBUG, "tls", c, "TLS handshake done: %s %s",
	         mbedtls_ssl_get_version(&t->ssl), mbedtls_ssl_get_ciphersuite(&t->ssl));
	mqbi_timer_stop(l, &c->timer);
	mqbi_client_start(c);
}

bool mqbi_tls_accept(mqbi_client *c, mqbi_tls_server *s)
{
	mqb_broker *b = c->w->broker;
	tls_conn *t = mqbi_calloc(&b->alloc, sizeof *t);
	if (!t)
		return false;
	mbedtls_ssl_init(&t->ssl);
	if (mbedtls_ssl_setup(&t->ssl, &s->conf) != 0) {
		mbedtls_ssl_free(&t->ssl);
		mqbi_free(&b->alloc, t);
		return false;
	}
	t->base.ops = &tls_ops;
	t->base.c = c;
	t->srv = server_ref(s);
	mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
	c->xport = &t->base;
	mqbi_timer_start(c->w->loop, &c->timer, (uint64_t)s->cfg.handshake_timeout,
	                 handshake_timeout);
	if (mqbi_loop_watch(c->w->loop, c->fd, MQBI_EV_READ, on_handshake_io, c) != MQB_OK) {
		handshake_failed(c, "cannot watch the socket");
		return true;
	}
	return true;
}

/* ---- The client certificate -------------------------------------------------- */

bool mqbi_tls_peer_cert(const mqbi_client *c, const void **der, size_t *len)
{
	const tls_conn *t = conn_of(c);
	const mbedtls_x509_crt *crt = t ? mbedtls_ssl_get_peer_cert(&t->ssl) : NULL;
	if (!crt)
		return false;
	*der = crt->raw.p;
	*len = crt->raw.len;
	return true;
}

static bool first_san(const mbedtls_x509_crt *crt, char *buf, size_t n)
{
	for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
		int tag = s->buf.tag & 0x1f;
		/* rfc822Name (1), dNSName (2), URI (6): IA5 strings */
		if ((s->buf.tag & MBEDTLS_ASN1_CONTEXT_SPECIFIC) &&
		    (tag == 1 || tag == 2 || tag == 6)) {
			snprintf(buf, n, "%.*s", (int)s->buf.len, (const char *)s->buf.p);
			return true;
		}
	}
	return false;
}

bool mqbi_tls_peer_name(const mqbi_client *c, int which, char *buf, size_t n)
{
	const tls_conn *t = conn_of(c);
	const mbedtls_x509_crt *crt = t && n ? mbedtls_ssl_get_peer_cert(&t->ssl) : NULL;
	if (!crt)
		return false;
	switch (which) {
	case MQBI_CERT_AS_CN:
		for (const mbedtls_x509_name *a = &crt->subject; a; a = a->next)
			if (a->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &a->oid) == 0) {
				snprintf(buf, n, "%.*s", (int)a->val.len, (const char *)a->val.p);
				return true;
			}
		return false;
	case MQBI_CERT_AS_DN:
		return mbedtls_x509_dn_gets(buf, n, &crt->subject) > 0;
	case MQBI_CERT_AS_SAN:
		return first_san(crt, buf, n);
	default:
		return false;
	}
}
