using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`runs show RUN`: one run's whole story, read from the checkpoint store (<see cref="CheckpointAdmin.ShowRunAsync"/>).</summary>
public static class RunsVerb
{
    private const string Usage = "usage: gpu-executor runs show RUN";

    public static async Task RunAsync(VerbContext context, string[] arguments, TextWriter stdout)
    {
        var admin = new CheckpointAdmin(context.Config, context.Adapters.Stores, stdout, context.Stop);
        switch (arguments)
        {
            case ["show", var run]:
                await admin.ShowRunAsync(run);
                break;
            default:
                throw new SystemFailureException(Usage);
        }
    }
}
