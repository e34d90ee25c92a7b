/* commands.h: the subcommands of build/trustmoe.  Each takes the arguments
 * after its name (argv[0] is the subcommand) and returns the process exit
 * code: 0 ok, 1 runtime failure, 2 bad input. */
#ifndef TM_COMMANDS_H
#define TM_COMMANDS_H

int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_trust(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
