/* Human-readable names of packet types and reason codes, for logs. */
#include "codec_internal.h"

const char *mqbi_ptype_name(int type)
{
	static const char *const names[] = {
	        "RESERVED", "CONNECT",  "CONNACK",    "PUBLISH", "PUBACK",      "PUBREC",
	        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",  "SUBACK",  "UNSUBSCRIBE", "UNSUBACK",
	        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
	};
	if (type < 0 || type >= (int)(sizeof(names) / sizeof(names[0])))
		return "UNKNOWN";
	return names[type];
}

const char *mqbi_reason_name(uint8_t reason)
{
	/* 0x00 also means "Normal disconnection" and "Granted QoS 0". */
	static const char *const names[256] = {
	        [0x00] = "Success",
	        [0x01] = "Granted QoS 1",
	        [0x02] = "Granted QoS 2",
	        [0x04] = "Disconnect with Will Message",
	        [0x10] = "No matching subscribers",
	        [0x11] = "No subscription existed",
	        [0x18] = "Continue authentication",
	        [0x19] = "Re-authenticate",
	        [0x80] = "Unspecified error",
	        [0x81] = "Malformed Packet",
	        [0x82] = "Protocol Error",
	        [0x83] = "Implementation specific error",
	        [0x84] = "Unsupported Protocol Version",
	        [0x85] = "Client Identifier not valid",
	        [0x86] = "Bad User Name or Password",
	        [0x87] = "Not authorized",
	        [0x88] = "Server unavailable",
	        [0x89] = "Server busy",
	        [0x8A] = "Banned",
	        [0x8B] = "Server shutting down",
	        [0x8C] = "Bad authentication method",
	        [0x8D] = "Keep Alive timeout",
	        [0x8E] = "Session taken over",
	        [0x8F] = "Topic Filter invalid",
	        [0x90] = "Topic Name invalid",
	        [0x91] = "Packet Identifier in use",
	        [0x92] = "Packet Identifier not found",
	        [0x93] = "Receive Maximum exceeded",
	        [0x94] = "Topic Alias invalid",
	        [0x95] = "Packet too large",
	        [0x96] = "Message rate too high",
	        [0x97] = "Quota exceeded",
	        [0x98] = "Administrative action",
	        [0x99] = "Payload format invalid",
	        [0x9A] = "Retain not supported",
	        [0x9B] = "QoS not supported",
	        [0x9C] = "Use another server",
	        [0x9D] = "Server moved",
	        [0x9E] = "Shared Subscriptions not supported",
	        [0x9F] = "Connection rate exceeded",
	        [0xA0] = "Maximum connect time",
	        [0xA1] = "Subscription Identifiers not supported",
	        [0xA2] = "Wildcard Subscriptions not supported",
	};
	return names[reason] ? names[reason] : "Unknown reason code";
}
