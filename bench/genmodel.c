/* genmodel: writes a synthetic checkpoint of a real shape (bench/synth.h) and its calibration set, streaming
 * every tensor through st_writer so that memory stays at a few MiB whatever the model's size. Used by
 * bench/bigmodel.sh to make a Mixtral-shaped model larger than one would like to hold in memory. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/synth.h"

static void usage(void)
{
	fprintf(stderr, "usage: genmodel DIR [--shape mixtral|olmoe] [--layers N] [--tokens T] [--full] "
			"[--shard-mb MB]\n"
			"  --full       also embeddings, attention and norms, as a real checkpoint has\n"
			"  --shard-mb   largest shard in MB (0: one file)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"shape", required_argument, NULL, 's'}, {"layers", required_argument, NULL, 'l'},
		{"tokens", required_argument, NULL, 't'}, {"full", no_argument, NULL, 'f'},
		{"shard-mb", required_argument, NULL, 'm'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	syn_shape s = syn_mixtral();
	unsigned long long shard_mb = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (strcmp(optarg, "olmoe") == 0)
				s = syn_olmoe();
			else if (strcmp(optarg, "mixtral") != 0)
				return usage(), 2;
			break;
		case 'l': s.layers = atoi(optarg); break;
		case 't': s.T = atoll(optarg); break;
		case 'f': s.full = 1; break;
		case 'm': shard_mb = strtoull(optarg, NULL, 10); break;
		default: usage(); return ch == 'h' ? 0 : 2;
		}
	}
	if (optind != argc - 1 || s.layers <= 0 || s.T <= 0)
		return usage(), 2;
	const char *dir = argv[optind];
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "genmodel: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	ms_error err = {0};
	if (syn_write_model(dir, &s, shard_mb * 1000000ULL, &err) != MS_OK ||
	    syn_write_calib(dir, &s, &err) != MS_OK) {
		fprintf(stderr, "genmodel: %s\n", err.msg);
		return 1;
	}
	printf("%s: %s, %d layers, %.2f GB of weights, %lld calibration tokens per block\n", dir, s.name, s.layers,
	       (double)syn_model_bytes(&s) * 1e-9, (long long)s.T);
	return 0;
}
