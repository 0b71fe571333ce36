/* route.c */
#include "candy.h"
