#include "candy.h"
#include "test.h"

void test_msg(void)
{
}
