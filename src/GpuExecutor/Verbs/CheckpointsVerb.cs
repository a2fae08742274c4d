using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Composition;
using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>
/// `checkpoints list [RUN] | show RUN GENERATION | verify RUN [GENERATION] [--deep] | retain RUN [KEEP] [--orphans] | push RUN DIR | pull RUN [GENERATION]`
/// for admins (<see cref="CheckpointAdmin"/>), and `checkpoints agent JOB RUN CONTAINER`, the
/// sync agent that prepare starts (<see cref="CheckpointAgentHost"/>). The command line itself
/// is declared in <see cref="VerbCommands"/>.
/// </summary>
public static class CheckpointsVerb
{
    private static CheckpointAdmin Admin(VerbContext context, TextWriter stdout) => new(context.Config, context.Adapters.Stores, stdout, context.Stop);

    public static Task ListAsync(VerbContext context, string? run, TextWriter stdout) =>
        run is null ? Admin(context, stdout).ListRunsAsync() : Admin(context, stdout).ListGenerationsAsync(run);

    public static Task ShowAsync(VerbContext context, string run, string generation, TextWriter stdout) =>
        Admin(context, stdout).ShowAsync(run, Generation(generation));

    public static Task VerifyAsync(VerbContext context, string run, string? generation, bool deep, TextWriter stdout) =>
        Admin(context, stdout).VerifyAsync(run, generation is null ? null : Generation(generation), deep);

    public static Task RetainAsync(VerbContext context, string run, string? keepText, bool orphans, TextWriter stdout)
    {
        int? keep = keepText is null ? null
            : int.TryParse(keepText, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) && parsed >= 1 ? parsed
            : throw new SystemFailureException($"'{keepText}' is not a number of generations to keep (1 or more).");
        return Admin(context, stdout).RetainAsync(run, keep, orphans);
    }

    public static Task PushAsync(VerbContext context, string run, string directory, TextWriter stdout) =>
        Admin(context, stdout).PushAsync(run, directory, KillSwitch());

    public static Task PullAsync(VerbContext context, string run, string? generation, TextWriter stdout) =>
        Admin(context, stdout).PullAsync(run, generation is null ? null : Generation(generation));

    /// <summary>The sync agent that prepare starts, detached: `checkpoints agent JOB RUN CONTAINER`.</summary>
    public static async Task AgentAsync(VerbContext context, string jobText, string run, string container)
    {
        const string usage = "usage: gpu-executor checkpoints agent JOB_ID RUN_KEY CONTAINER";
        // Its log is a file in the run's directory (prepare redirects it): it has no job log.
        var (jobId, log) = context.DetachedJob(jobText, usage);
        if (!CheckpointRequest.IsRunKey(run))
            throw new SystemFailureException(usage);
        context.Facts.RunKey = run;
        var host = new CheckpointAgentHost(context.Config, context.Adapters.Containers, context.Adapters.Stores, CompositionRoot.GitLab, log);
        await host.RunAsync(jobId, run, container, KillSwitch(), context.Stop);
    }

    /// <summary>
    /// Fault injection for the crash tests: with GPU_EXECUTOR_FAULT_KILL_AFTER=STEP (a
    /// <see cref="CommitStep"/>), the process SIGKILLs itself right after that step of a commit,
    /// as a host losing power would stop it. Unset, as in production, it does nothing.
    /// </summary>
    private static Func<CommitStep, Task>? KillSwitch() =>
        Environment.GetEnvironmentVariable("GPU_EXECUTOR_FAULT_KILL_AFTER") is { Length: > 0 } text && Enum.TryParse<CommitStep>(text, out var killAfter)
            ? step =>
            {
                if (step == killAfter)
                    System.Diagnostics.Process.GetCurrentProcess().Kill();
                return Task.CompletedTask;
            }
            : null;

    private static long Generation(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) && generation > 0
            ? generation
            : throw new SystemFailureException($"'{text}' is not a generation number.");
}
