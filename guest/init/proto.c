/* Frame and field codec of the guest protocol: pure functions, no I/O. */
#include "proto.h"

#include <string.h>

uint16_t proto_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

uint32_t proto_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint64_t proto_get64(const uint8_t *p)
{
	return (uint64_t)proto_get32(p) | ((uint64_t)proto_get32(p + 4) << 32);
}

void proto_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void proto_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

void proto_put64(uint8_t *p, uint64_t v)
{
	proto_put32(p, (uint32_t)v);
	proto_put32(p + 4, (uint32_t)(v >> 32));
}

bool proto_is_data_op(uint16_t op)
{
	return op == PROTO_OP_STDIN || op == PROTO_OP_STDOUT || op == PROTO_OP_STDERR;
}

enum proto_type proto_tag_type(uint16_t tag)
{
	switch (tag) {
	case PROTO_TAG_KERNEL:
	case PROTO_TAG_INIT_VERSION:
	case PROTO_TAG_MESSAGE:
	case PROTO_TAG_SOURCE:
	case PROTO_TAG_HOSTNAME:
	case PROTO_TAG_ARG:
	case PROTO_TAG_ENV:
	case PROTO_TAG_CWD:
	case PROTO_TAG_MAC:
	case PROTO_TAG_ADDRESS:
	case PROTO_TAG_GATEWAY:
	case PROTO_TAG_IFNAME:
	case PROTO_TAG_TARGET:
	case PROTO_TAG_FSTYPE:
	case PROTO_TAG_OPTIONS:
	case PROTO_TAG_SUBDIR:
	case PROTO_TAG_RLIMIT:
	case PROTO_TAG_SYSCTL:
	case PROTO_TAG_PATH:
		return PROTO_TYPE_STRING;
	case PROTO_TAG_VERSION:
	case PROTO_TAG_ERRNO:
	case PROTO_TAG_PID:
	case PROTO_TAG_UID:
	case PROTO_TAG_GID:
	case PROTO_TAG_GROUP:
	case PROTO_TAG_TTY:
	case PROTO_TAG_ROWS:
	case PROTO_TAG_COLS:
	case PROTO_TAG_STDIN:
	case PROTO_TAG_BYTES:
	case PROTO_TAG_SIGNO:
	case PROTO_TAG_STATUS:
	case PROTO_TAG_SIGNAL:
	case PROTO_TAG_READONLY:
	case PROTO_TAG_MAIN:
	case PROTO_TAG_PREFIX:
	case PROTO_TAG_MTU:
	case PROTO_TAG_PIDS_MAX:
	case PROTO_TAG_LAST_ID:
	case PROTO_TAG_PROC:
	case PROTO_TAG_CONTAINER:
	case PROTO_TAG_CACHE:
	case PROTO_TAG_DROP:
	case PROTO_TAG_REHEARSE:
	case PROTO_TAG_STAGED:
		return PROTO_TYPE_U32;
	case PROTO_TAG_CAPS:
	case PROTO_TAG_RECEIVED:
		return PROTO_TYPE_U64;
	default:
		return PROTO_TYPE_UNKNOWN;
	}
}

const char *proto_strerror(int res)
{
	switch (res) {
	case PROTO_RES_OK: return "ok";
	case PROTO_RES_SHORT: return "truncated frame";
	case PROTO_RES_BAD_MAGIC: return "bad magic";
	case PROTO_RES_TOO_LONG: return "frame length over cap";
	case PROTO_RES_FIELD_PAST_END: return "field runs past end of payload";
	case PROTO_RES_INT_SIZE: return "integer field of the wrong size";
	case PROTO_RES_NUL_IN_STRING: return "NUL byte in string field";
	case PROTO_RES_STRING_TOO_LONG: return "string field over 65536 bytes";
	case PROTO_RES_TOO_MANY_FIELDS: return "more than 4096 fields";
	case PROTO_RES_DATA_TOO_LONG: return "data frame over 65536 bytes";
	case PROTO_RES_TRAILING: return "bytes after frame";
	default: return "unknown error";
	}
}

int proto_parse_header(const uint8_t *buf, size_t n, struct proto_header *h)
{
	if (n < 4)
		return PROTO_RES_SHORT;
	h->magic = proto_get32(buf);
	if (h->magic != PROTO_MAGIC)
		return PROTO_RES_BAD_MAGIC;
	if (n < PROTO_HDR_SIZE)
		return PROTO_RES_SHORT;
	h->op = proto_get16(buf + 4);
	h->flags = proto_get16(buf + 6);
	h->id = proto_get32(buf + 8);
	h->len = proto_get32(buf + 12);
	if (h->len > PROTO_MAX_PAYLOAD)
		return PROTO_RES_TOO_LONG;
	return PROTO_RES_OK;
}

int proto_decode_payload(uint16_t op, const uint8_t *payload, uint32_t len,
			 struct proto_field *fields, size_t max_fields, size_t *nfields)
{
	*nfields = 0;
	if (proto_is_data_op(op))
		return len > PROTO_MAX_DATA ? PROTO_RES_DATA_TOO_LONG : PROTO_RES_OK;
	size_t off = 0;
	while (off < len) {
		if (len - off < PROTO_FIELD_HDR)
			return PROTO_RES_FIELD_PAST_END;
		uint16_t tag = proto_get16(payload + off);
		uint32_t flen = proto_get32(payload + off + 2);
		off += PROTO_FIELD_HDR;
		if (flen > len - off)
			return PROTO_RES_FIELD_PAST_END;
		const uint8_t *val = payload + off;
		switch (proto_tag_type(tag)) {
		case PROTO_TYPE_U32:
			if (flen != 4)
				return PROTO_RES_INT_SIZE;
			break;
		case PROTO_TYPE_U64:
			if (flen != 8)
				return PROTO_RES_INT_SIZE;
			break;
		case PROTO_TYPE_STRING:
			if (flen > PROTO_MAX_STRING)
				return PROTO_RES_STRING_TOO_LONG;
			if (flen > 0 && memchr(val, 0, flen) != NULL)
				return PROTO_RES_NUL_IN_STRING;
			break;
		case PROTO_TYPE_UNKNOWN:
			break;
		}
		if (*nfields >= max_fields || *nfields >= PROTO_MAX_FIELDS)
			return PROTO_RES_TOO_MANY_FIELDS;
		fields[*nfields].tag = tag;
		fields[*nfields].len = flen;
		fields[*nfields].val = val;
		(*nfields)++;
		off += flen;
	}
	return PROTO_RES_OK;
}

int proto_decode_frame(const uint8_t *buf, size_t n, struct proto_frame *f)
{
	int res = proto_parse_header(buf, n, &f->hdr);
	if (res != PROTO_RES_OK)
		return res;
	if (n - PROTO_HDR_SIZE < f->hdr.len)
		return PROTO_RES_SHORT;
	if (n - PROTO_HDR_SIZE > f->hdr.len)
		return PROTO_RES_TRAILING;
	f->payload = buf + PROTO_HDR_SIZE;
	return proto_decode_payload(f->hdr.op, f->payload, f->hdr.len, f->fields, PROTO_MAX_FIELDS,
				    &f->nfields);
}

bool proto_frame_u32(const struct proto_frame *f, uint16_t tag, uint32_t *out)
{
	bool found = false;
	for (size_t i = 0; i < f->nfields; i++) {
		if (f->fields[i].tag == tag && f->fields[i].len == 4) {
			*out = proto_get32(f->fields[i].val);
			found = true;
		}
	}
	return found;
}

bool proto_frame_u64(const struct proto_frame *f, uint16_t tag, uint64_t *out)
{
	bool found = false;
	for (size_t i = 0; i < f->nfields; i++) {
		if (f->fields[i].tag == tag && f->fields[i].len == 8) {
			*out = proto_get64(f->fields[i].val);
			found = true;
		}
	}
	return found;
}

bool proto_frame_str(const struct proto_frame *f, uint16_t tag, const uint8_t **val, uint32_t *len)
{
	bool found = false;
	for (size_t i = 0; i < f->nfields; i++) {
		if (f->fields[i].tag == tag) {
			*val = f->fields[i].val;
			*len = f->fields[i].len;
			found = true;
		}
	}
	return found;
}

void proto_writer_begin(struct proto_writer *w, uint8_t *buf, size_t cap, uint16_t op, uint32_t id)
{
	w->buf = buf;
	w->cap = cap;
	w->len = 0;
	w->overflow = cap < PROTO_HDR_SIZE;
	if (w->overflow)
		return;
	proto_put32(buf, PROTO_MAGIC);
	proto_put16(buf + 4, op);
	proto_put16(buf + 6, 0);
	proto_put32(buf + 8, id);
	proto_put32(buf + 12, 0);
	w->len = PROTO_HDR_SIZE;
}

static bool writer_room(struct proto_writer *w, size_t n)
{
	if (w->overflow || w->cap - w->len < n || w->len - PROTO_HDR_SIZE + n > PROTO_MAX_PAYLOAD) {
		w->overflow = true;
		return false;
	}
	return true;
}

void proto_writer_bytes(struct proto_writer *w, uint16_t tag, const void *val, size_t len)
{
	if (len > UINT32_MAX || !writer_room(w, PROTO_FIELD_HDR + len))
		return;
	proto_put16(w->buf + w->len, tag);
	proto_put32(w->buf + w->len + 2, (uint32_t)len);
	if (len > 0)
		memcpy(w->buf + w->len + PROTO_FIELD_HDR, val, len);
	w->len += PROTO_FIELD_HDR + len;
}

void proto_writer_u32(struct proto_writer *w, uint16_t tag, uint32_t v)
{
	uint8_t b[4];
	proto_put32(b, v);
	proto_writer_bytes(w, tag, b, 4);
}

void proto_writer_u64(struct proto_writer *w, uint16_t tag, uint64_t v)
{
	uint8_t b[8];
	proto_put64(b, v);
	proto_writer_bytes(w, tag, b, 8);
}

void proto_writer_str(struct proto_writer *w, uint16_t tag, const char *s)
{
	size_t n = strlen(s);
	proto_writer_bytes(w, tag, s, n > PROTO_MAX_STRING ? PROTO_MAX_STRING : n);
}

void proto_writer_data(struct proto_writer *w, const void *data, size_t len)
{
	if (!writer_room(w, len))
		return;
	if (len > 0)
		memcpy(w->buf + w->len, data, len);
	w->len += len;
}

size_t proto_writer_end(struct proto_writer *w)
{
	if (w->overflow)
		return 0;
	proto_put32(w->buf + 12, (uint32_t)(w->len - PROTO_HDR_SIZE));
	return w->len;
}
