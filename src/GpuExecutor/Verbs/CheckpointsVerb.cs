using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Composition;
using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>
/// `checkpoints list [RUN] | show RUN GENERATION | verify RUN [GENERATION] [--deep] | retain RUN [KEEP] [--orphans] | push RUN DIR | pull RUN [GENERATION]`
/// for admins (<see cref="CheckpointAdmin"/>), and `checkpoints agent JOB RUN CONTAINER`, the
/// sync agent that prepare starts (<see cref="CheckpointAgentHost"/>).
/// </summary>
public static class CheckpointsVerb
{
    private const string Usage = "usage: gpu-executor checkpoints list [RUN] | show RUN GENERATION | verify RUN [GENERATION] [--deep] | retain RUN [KEEP] [--orphans] | push RUN DIR | pull RUN [GENERATION]";

    public static async Task RunAsync(VerbContext context, string[] arguments, TextWriter stdout)
    {
        var admin = new CheckpointAdmin(context.Config, context.Adapters.Stores, stdout, context.Stop);
        switch (arguments)
        {
            case ["list"]:
                await admin.ListRunsAsync();
                break;
            case ["list", var run]:
                await admin.ListGenerationsAsync(run);
                break;
            case ["show", var run, var generation]:
                await admin.ShowAsync(run, Generation(generation));
                break;
            case ["verify", var run, .. var rest] when rest.Length <= 2:
                var pinned = rest.FirstOrDefault(argument => argument != "--deep");
                await admin.VerifyAsync(run, pinned is null ? null : Generation(pinned), deep: rest.Contains("--deep"));
                break;
            case ["retain", var run, .. var rest] when rest.Length <= 2:
                var keepText = rest.FirstOrDefault(argument => argument != "--orphans");
                int? keep = keepText is null ? null
                    : int.TryParse(keepText, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) && parsed >= 1 ? parsed
                    : throw new SystemFailureException($"'{keepText}' is not a number of generations to keep (1 or more).");
                await admin.RetainAsync(run, keep, orphans: rest.Contains("--orphans"));
                break;
            case ["push", var run, var directory]:
                await admin.PushAsync(run, directory, KillSwitch());
                break;
            case ["pull", var run, .. var rest] when rest.Length <= 1:
                await admin.PullAsync(run, rest.Length == 1 ? Generation(rest[0]) : null);
                break;
            case ["agent", var jobText, var run, var container]:
                if (!long.TryParse(jobText, NumberStyles.None, CultureInfo.InvariantCulture, out var jobId) || !CheckpointRequest.IsRunKey(run))
                    throw new SystemFailureException("usage: gpu-executor checkpoints agent JOB_ID RUN_KEY CONTAINER");
                // Its log is a file in the run's directory (prepare redirects it): it has no job log.
                void Log(string line) => context.Log.WriteLine($"{DateTime.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} job {jobId}: {line}");
                var host = new CheckpointAgentHost(context.Config, context.Adapters.Containers, context.Adapters.Stores, CompositionRoot.GitLab, Log);
                await host.RunAsync(jobId, run, container, KillSwitch(), context.Stop);
                break;
            default:
                throw new SystemFailureException(Usage);
        }
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
