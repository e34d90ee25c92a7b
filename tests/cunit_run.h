/* cunit_run.h: the shared end of every CUnit test program. */
#ifndef TM_CUNIT_RUN_H
#define TM_CUNIT_RUN_H

#include <CUnit/Basic.h>
#include <stdio.h>

/* Runs every registered suite verbosely, prints "N passed, N failed" and
 * returns the exit status.  The failure counts are read before the registry
 * is cleaned up, which resets them. */
static inline int cunit_run(void)
{
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_tests_failed(), run = CU_get_number_of_tests_run();
    unsigned assert_failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    printf("%u passed, %u failed\n", run - failed, failed);
    return failed || assert_failures ? 1 : 0;
}

#endif
