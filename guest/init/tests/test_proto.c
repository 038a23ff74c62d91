/* Unit tests of the protocol codec: golden vectors, round trips, and a fuzz loop. */
#define _GNU_SOURCE
#include "../proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static struct proto_field fields[PROTO_MAX_FIELDS];

static size_t unhex(const char *s, uint8_t **out)
{
	size_t n = strlen(s) / 2;
	*out = malloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		sscanf(s + 2 * i, "%2x", &v);
		(*out)[i] = (uint8_t)v;
	}
	return n;
}

struct expect {
	char name[128];
	uint8_t *bytes;
	size_t n;
	int op;
	unsigned long id;
	size_t nfields;
	uint16_t tags[64];
	uint8_t *vals[64];
	size_t lens[64];
	uint8_t *data;
	size_t ndata;
	bool has_data;
};

static void check_frame(struct expect *e)
{
	struct proto_frame f = {.fields = fields};
	int res = proto_decode_frame(e->bytes, e->n, &f);
	CHECK(res == 0, "%s: decode failed: %s", e->name, proto_strerror(res));
	if (res != 0)
		return;
	CHECK(f.hdr.op == e->op, "%s: op %u != %d", e->name, f.hdr.op, e->op);
	CHECK(f.hdr.id == e->id, "%s: id %u != %lu", e->name, f.hdr.id, e->id);
	uint8_t *buf = malloc(e->n + 64);
	struct proto_writer w;
	proto_writer_begin(&w, buf, e->n + 64, (uint16_t)e->op, (uint32_t)e->id);
	if (e->has_data) {
		CHECK(proto_is_data_op(f.hdr.op), "%s: data expected", e->name);
		CHECK(f.hdr.len == e->ndata && memcmp(f.payload, e->data, e->ndata) == 0,
		      "%s: data differs", e->name);
		proto_writer_data(&w, e->data, e->ndata);
	} else {
		CHECK(f.nfields == e->nfields, "%s: %zu fields != %zu", e->name, f.nfields, e->nfields);
		for (size_t i = 0; i < f.nfields && i < e->nfields; i++) {
			CHECK(f.fields[i].tag == e->tags[i] && f.fields[i].len == e->lens[i] &&
				      memcmp(f.fields[i].val, e->vals[i], e->lens[i]) == 0,
			      "%s: field %zu differs", e->name, i);
		}
		for (size_t i = 0; i < e->nfields; i++)
			proto_writer_bytes(&w, e->tags[i], e->vals[i], e->lens[i]);
	}
	size_t n = proto_writer_end(&w);
	CHECK(n == e->n && memcmp(buf, e->bytes, n) == 0, "%s: re-encoding differs", e->name);
	/* Every strict prefix is incomplete, never accepted. */
	for (size_t cut = 0; cut < e->n; cut++) {
		struct proto_frame g = {.fields = fields};
		if (proto_decode_frame(e->bytes, cut, &g) == 0) {
			CHECK(0, "%s: prefix of %zu bytes accepted", e->name, cut);
			break;
		}
	}
	free(buf);
}

static void free_expect(struct expect *e)
{
	free(e->bytes);
	for (size_t i = 0; i < e->nfields; i++)
		free(e->vals[i]);
	free(e->data);
	memset(e, 0, sizeof(*e));
}

static int run_golden(const char *path, uint8_t ***corpus, size_t **corpus_len, size_t *ncorpus)
{
	FILE *fp = fopen(path, "r");
	if (!fp) {
		perror(path);
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	struct expect e = {0};
	bool open = false;
	int nframes = 0, nbad = 0;
	char *tok;
	while (getline(&line, &cap, fp) > 0) {
		line[strcspn(line, "\r\n")] = 0;
		char *p = line;
		while (*p == ' ')
			p++;
		if (*p == '#' || *p == 0)
			continue;
		tok = strtok(p, " ");
		if (strcmp(tok, "frame") == 0 || strcmp(tok, "bad") == 0) {
			if (open) {
				check_frame(&e);
				free_expect(&e);
				open = false;
			}
			bool bad = tok[0] == 'b';
			char *name = strtok(NULL, " ");
			char *hex = strtok(NULL, " ");
			snprintf(e.name, sizeof(e.name), "%s", name);
			e.n = unhex(hex, &e.bytes);
			*corpus = realloc(*corpus, (*ncorpus + 1) * sizeof(**corpus));
			*corpus_len = realloc(*corpus_len, (*ncorpus + 1) * sizeof(**corpus_len));
			(*corpus)[*ncorpus] = malloc(e.n + 1);
			memcpy((*corpus)[*ncorpus], e.bytes, e.n);
			(*corpus_len)[(*ncorpus)++] = e.n;
			if (bad) {
				struct proto_frame f = {.fields = fields};
				int res = proto_decode_frame(e.bytes, e.n, &f);
				CHECK(res != 0, "bad %s: accepted", e.name);
				nbad++;
				free_expect(&e);
			} else {
				open = true;
				nframes++;
			}
		} else if (open && strcmp(tok, "op") == 0) {
			e.op = atoi(strtok(NULL, " "));
		} else if (open && strcmp(tok, "id") == 0) {
			e.id = strtoul(strtok(NULL, " "), NULL, 10);
		} else if (open && strcmp(tok, "field") == 0 && e.nfields < 64) {
			e.tags[e.nfields] = (uint16_t)atoi(strtok(NULL, " "));
			char *hex = strtok(NULL, " ");
			e.lens[e.nfields] = unhex(hex ? hex : "", &e.vals[e.nfields]);
			e.nfields++;
		} else if (open && strcmp(tok, "data") == 0) {
			char *hex = strtok(NULL, " ");
			e.ndata = unhex(hex ? hex : "", &e.data);
			e.has_data = true;
		} else {
			CHECK(0, "unparsed golden line: %s", tok);
		}
	}
	if (open)
		check_frame(&e);
	free_expect(&e);
	free(line);
	fclose(fp);
	CHECK(nframes >= 15, "only %d good frames", nframes);
	CHECK(nbad >= 12, "only %d bad frames", nbad);
	printf("golden: %d frames, %d bad\n", nframes, nbad);
	return 0;
}

static void test_writer_overflow(void)
{
	uint8_t buf[20];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_OK, 1);
	proto_writer_u32(&w, PROTO_TAG_PID, 1);
	CHECK(proto_writer_end(&w) == 0, "writer overflow not reported");
	proto_writer_begin(&w, buf, 8, PROTO_OP_OK, 1);
	CHECK(proto_writer_end(&w) == 0, "tiny buffer not reported");
}

static void test_last_wins(void)
{
	uint8_t buf[128];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_SETUP_ROOT, 9);
	proto_writer_str(&w, PROTO_TAG_HOSTNAME, "a");
	proto_writer_str(&w, PROTO_TAG_HOSTNAME, "bb");
	proto_writer_u32(&w, PROTO_TAG_READONLY, 0);
	proto_writer_u32(&w, PROTO_TAG_READONLY, 1);
	size_t n = proto_writer_end(&w);
	struct proto_frame f = {.fields = fields};
	CHECK(proto_decode_frame(buf, n, &f) == 0, "decode");
	const uint8_t *v;
	uint32_t len, u;
	CHECK(proto_frame_str(&f, PROTO_TAG_HOSTNAME, &v, &len) && len == 2 && v[0] == 'b', "last str");
	CHECK(proto_frame_u32(&f, PROTO_TAG_READONLY, &u) && u == 1, "last u32");
	CHECK(!proto_frame_u32(&f, PROTO_TAG_UID, &u), "absent tag found");
}

static void test_u64(void)
{
	uint8_t buf[128];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_START, 9);
	proto_writer_u64(&w, PROTO_TAG_CAPS, 1);
	proto_writer_u64(&w, PROTO_TAG_CAPS, UINT64_C(0x1ffffffffff));
	size_t n = proto_writer_end(&w);
	struct proto_frame f = {.fields = fields};
	CHECK(proto_decode_frame(buf, n, &f) == 0, "decode u64");
	uint64_t v = 0;
	CHECK(proto_frame_u64(&f, PROTO_TAG_CAPS, &v) && v == UINT64_C(0x1ffffffffff),
	      "last u64: %llx", (unsigned long long)v);
	CHECK(!proto_frame_u64(&f, PROTO_TAG_UID, &v), "absent u64 tag found");
	/* a u32 in a u64 tag is malformed */
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_START, 9);
	proto_writer_u32(&w, PROTO_TAG_CAPS, 1);
	n = proto_writer_end(&w);
	CHECK(proto_decode_frame(buf, n, &f) == PROTO_RES_INT_SIZE, "4-byte CAPS accepted");
}

/* STAGE_LOWER's PATH is a repeated string, SETUP_ROOT's STAGED a u32: both decode and are
 * type-checked (the golden file has their frames; a NUL inside a PATH is tested only here). */
static void test_stage_lower_tags(void)
{
	uint8_t buf[128];
	struct proto_writer w;
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_STAGE_LOWER, 5);
	proto_writer_str(&w, PROTO_TAG_PATH, "usr/bin/python3");
	proto_writer_str(&w, PROTO_TAG_PATH, "/etc/passwd");
	proto_writer_u32(&w, PROTO_TAG_BYTES, 1u << 20);
	size_t n = proto_writer_end(&w);
	struct proto_frame f = {.fields = fields};
	CHECK(proto_decode_frame(buf, n, &f) == 0 && f.nfields == 3, "decode STAGE_LOWER");
	CHECK(proto_tag_type(PROTO_TAG_PATH) == PROTO_TYPE_STRING, "PATH is not a string");
	CHECK(proto_tag_type(PROTO_TAG_STAGED) == PROTO_TYPE_U32, "STAGED is not a u32");
	/* a NUL inside a PATH, a 2-byte STAGED */
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_STAGE_LOWER, 5);
	proto_writer_bytes(&w, PROTO_TAG_PATH, "a\0b", 3);
	n = proto_writer_end(&w);
	CHECK(proto_decode_frame(buf, n, &f) == PROTO_RES_NUL_IN_STRING, "NUL in PATH accepted");
	proto_writer_begin(&w, buf, sizeof(buf), PROTO_OP_SETUP_ROOT, 6);
	proto_writer_bytes(&w, PROTO_TAG_STAGED, "\1\0", 2);
	n = proto_writer_end(&w);
	CHECK(proto_decode_frame(buf, n, &f) == PROTO_RES_INT_SIZE, "2-byte STAGED accepted");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)rng_state;
}

/* Mutates golden frames and random bytes; the decoder must never crash or read out of bounds. */
static void fuzz(uint8_t **corpus, size_t *corpus_len, size_t ncorpus, int rounds)
{
	int accepted = 0, rejected = 0;
	for (int r = 0; r < rounds; r++) {
		size_t n;
		uint8_t *buf;
		if (ncorpus > 0 && rnd() % 8 != 0) {
			size_t k = rnd() % ncorpus;
			n = corpus_len[k];
			if (n > 4096 && rnd() % 4 != 0)
				n = 16 + rnd() % 512;
			if (n > corpus_len[k])
				n = corpus_len[k];
			size_t extra = rnd() % 3 == 0 ? rnd() % 16 : 0;
			buf = malloc(n + extra + 1);
			memcpy(buf, corpus[k], n);
			for (size_t i = 0; i < extra; i++)
				buf[n + i] = (uint8_t)rnd();
			n += extra;
			int flips = 1 + rnd() % 4;
			for (int i = 0; i < flips && n > 0; i++) {
				size_t pos = rnd() % n;
				switch (rnd() % 3) {
				case 0: buf[pos] ^= (uint8_t)(1u << (rnd() % 8)); break;
				case 1: buf[pos] = (uint8_t)rnd(); break;
				default: if (rnd() % 2) n = pos; break;
				}
			}
			/* Keep the length consistent half the time so field decoding gets exercised. */
			if (n >= PROTO_HDR_SIZE && rnd() % 2)
				proto_put32(buf + 12, (uint32_t)(n - PROTO_HDR_SIZE));
		} else {
			n = rnd() % 256;
			buf = malloc(n + 1);
			for (size_t i = 0; i < n; i++)
				buf[i] = (uint8_t)rnd();
			if (n >= PROTO_HDR_SIZE && rnd() % 2) {
				proto_put32(buf, PROTO_MAGIC);
				proto_put32(buf + 12, (uint32_t)(n - PROTO_HDR_SIZE));
			}
		}
		/* Exact-size heap copy so ASan catches any over-read. */
		uint8_t *exact = malloc(n ? n : 1);
		memcpy(exact, buf, n);
		struct proto_frame f = {.fields = fields};
		int res = proto_decode_frame(exact, n, &f);
		if (res == 0) {
			accepted++;
			for (size_t i = 0; i < f.nfields; i++) {
				if ((const uint8_t *)f.fields[i].val + f.fields[i].len > exact + n) {
					CHECK(0, "fuzz: field outside buffer");
					break;
				}
			}
		} else {
			rejected++;
		}
		free(exact);
		free(buf);
	}
	CHECK(accepted + rejected == rounds, "fuzz rounds");
	printf("fuzz: %d rounds, %d accepted, %d rejected\n", rounds, accepted, rejected);
}

int main(int argc, char **argv)
{
	const char *golden = argc > 1 ? argv[1] : "tests/golden/guest_protocol.txt";
	int rounds = argc > 2 ? atoi(argv[2]) : 200000;
	uint8_t **corpus = NULL;
	size_t *corpus_len = NULL, ncorpus = 0;
	CHECK(run_golden(golden, &corpus, &corpus_len, &ncorpus) == 0, "golden file readable");
	test_writer_overflow();
	test_last_wins();
	test_u64();
	test_stage_lower_tags();
	fuzz(corpus, corpus_len, ncorpus, rounds);
	for (size_t i = 0; i < ncorpus; i++)
		free(corpus[i]);
	free(corpus);
	free(corpus_len);
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
