/* ws.c */
#include "candy.h"
