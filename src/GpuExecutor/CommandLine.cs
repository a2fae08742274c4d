using System.CommandLine;
using System.Runtime.InteropServices;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Verbs;

namespace GpuExecutor;

/// <summary>
/// `gpu-executor [--config PATH] VERB [ARGS]`, parsed by System.CommandLine from the tree in
/// <see cref="VerbCommands"/>. The runner appends `&lt;script&gt; &lt;stage&gt;` to run_args, so
/// the runner-facing verbs take exactly what they always took; --config may stand before or after
/// the verb.
/// </summary>
public static class CommandLine
{
    public const string ConfigEnvironmentVariable = "GPU_EXECUTOR_CONFIG";

    public static async Task<int> RunAsync(string[] args, IRunnerEnvironment environment)
    {
        // The runner stops a stage with SIGTERM to the process group (cancel, timeout, shutdown).
        // Turn it into a cancellation so the verb can stop the work inside the container and still
        // exit with a protocol exit code, instead of dying by the signal.
        using var stop = new CancellationTokenSource();
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Cancel(); });
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stop.Cancel(); });

        var verbs = new VerbCommands(environment, Console.Out, Console.Error, stop.Token);
        // No response files: an argument that begins with '@' is a path or a name, never a file of
        // more arguments, whatever a runner or a job puts there.
        var parse = verbs.Root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Errors.Count > 0)
        {
            // A bad command line of a protocol verb must still end in a protocol exit code, so the
            // errors are reported here and mapped in ExitCodes rather than by the parser's own 1.
            foreach (var error in parse.Errors)
                Console.Error.WriteLine($"ERROR: {error.Message}");
            Console.Error.WriteLine($"See 'gpu-executor {string.Join(' ', CommandPath(parse.CommandResult.Command))} --help'.");
            return VerbCommands.IsSimulation(parse.CommandResult.Command)
                ? ExitCodes.FromSimulationFailure(new UsageException("bad command line"), TextWriter.Null)
                : ExitCodes.FromOutcome(new SystemFailureException("bad command line"), environment, TextWriter.Null);
        }

        return await parse.InvokeAsync(new InvocationConfiguration
        {
            Output = Console.Out,
            Error = Console.Error,
            // Signals are ours (above): the parser's own handler would end the process on a timer.
            ProcessTerminationTimeout = null,
            // Every failure is mapped by ExitCodes inside the verb's action.
            EnableDefaultExceptionHandler = false,
        }, CancellationToken.None);
    }

    private static IEnumerable<string> CommandPath(Command command) =>
        command.Parents.OfType<Command>().Where(parent => parent is not RootCommand).SelectMany(CommandPath).Append(command is RootCommand ? "" : command.Name).Where(name => name.Length > 0);
}
