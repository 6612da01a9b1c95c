/* Counts the entries of a /proc/self directory: open descriptors
 * ("/proc/self/fd") or threads ("/proc/self/task"), for leak checks.
 * Header-only; include from a Check test file. */
#ifndef PROC_COUNT_H
#define PROC_COUNT_H

#include <check.h>
#include <dirent.h>

static int count_proc_entries(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

#endif
