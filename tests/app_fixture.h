/* The interactive application opened on the golden case, for the application's unit tests (which link the
 * curses-free tui objects). */
#ifndef TEST_APP_FIXTURE_H
#define TEST_APP_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "io/calib.h"
#include "io/model.h"
#include "tui/app.h"

#define GOLDEN "tests/data/golden/msmoe-mixtral"

typedef struct {
	mdl_model *m;
	calib *cal;
	app a;
} golden_app;

/* Opens the golden model and calibration set and the application on them with cfg, then waits until the worker
 * is idle. -1 (reason on stderr) on failure; golden_app_close is safe either way. */
static inline int golden_app_open(golden_app *ga, const app_config *cfg)
{
	ms_error err = {0};
	memset(ga, 0, sizeof *ga);
	if (mdl_open(GOLDEN "/model", &ga->m, &err) != MS_OK ||
	    calib_open(GOLDEN "/calib.safetensors", ga->m, &ga->cal, &err) != MS_OK) {
		fprintf(stderr, "  golden case: %s\n", err.msg);
		return -1;
	}
	app_config c = *cfg;
	if (app_init(&ga->a, ga->m, ga->cal, &c, &err) != 0) {
		fprintf(stderr, "  app_init: %s\n", err.msg);
		return -1;
	}
	app_wait_idle(&ga->a);
	return 0;
}

static inline void golden_app_close(golden_app *ga)
{
	app_free(&ga->a);
	if (ga->cal)
		calib_close(ga->cal);
	if (ga->m)
		mdl_close(ga->m);
}

#endif
